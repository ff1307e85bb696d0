"""`make bench`: what the workflow costs on this machine, printed and written as JSON.

- the CPU's relevant ISA (avx2, avx512, avx512_bf16, amx), its bf16-over-fp32 matmul speed-up and
  the precision `auto` resolves to from them;
- matmul peak (fp32, bf16) measured here, now: the denominator of model-FLOP utilisation (MFU),
  taken against the peak of the precision the fine-tune actually used;
- the pipeline's fine-tune (default config, or --override ...) in a throwaway clone: real
  (non-padding) tokens per second of training, MFU, peak RSS of the process, test accuracy;
- the same fine-tune written the simple way (benchmarks/plain_trainer.py), with --bf16 where
  `auto` picks bf16 (natively and clearly faster than fp32: the best a user would pick), and the ratio;
- per-stage start-up (process start to the stage's MLflow run opening) and `transferlab --help`;
- a no-op `dvc repro` against `dvc status` on the same repository;
- with --levers: a one-epoch fine-tune per speed lever, each the default with one switch flipped.
Noisy figures are repeated: median, min and max (throughput: one sample per training epoch).

    python benchmarks/bench.py [--epochs N] [--override key=value ...] [--levers] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "train", "finetune", "evaluate")
# One switch each, flipped from the default config (conf/runtime, precision, finetune).
LEVERS = (
    "precision=fp32",
    "precision=bf16",
    "finetune.attention_dropout=null",
    "runtime.attention=eager",
    "runtime.attention=sdpa",
    "runtime.fast_dropout=false",
    "runtime.optimizer=foreach",
    "runtime.optimizer=for_loop",
    "runtime.compile=true",
    "runtime.reuse_freed_memory=false",
    "runtime.group_by_length=true",
    "runtime.group_by_length=false",
    "runtime.dataloader_workers=2",
    "runtime.threads=1",
    "repro=fast",
)


def spread(samples: list[float], digits: int = 3) -> dict:
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "n": len(samples),
    }


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "bf16")


def machine() -> dict:
    """The CPU and what torch makes of it: the facts every figure here depends on."""
    import torch

    from transferlab.training.precision import (
        cpu_bf16_matmul_speedup,
        cpu_flags,
        cpu_has_native_bf16,
        resolve_precision,
    )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model_name or platform.machine(),
        "cores": os.cpu_count(),
        "isa": sorted(cpu_flags() & set(ISA_FLAGS)),
        "native_bf16": cpu_has_native_bf16(),
        "bf16_matmul_speedup": cpu_bf16_matmul_speedup(),  # what precision=auto decides on
        "precision_auto": resolve_precision("auto", device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of a square matmul, the best a dense kernel does here (bf16: oneDNN, AVX512-BF16/AMX).
    Emulated bf16 (0.3 GFLOP/s on AVX2) is measured on a small matrix: 2048^2 takes a minute a product."""
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b  # warm-up: thread pool, kernel selection
    samples = []
    for _ in range(repeats):
        loops, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.0:
            a @ b
            loops += 1
        samples.append(2 * size**3 * loops / (time.perf_counter() - started) / 1e9)
    return spread(samples, 1)


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_EXP"))}
    return clean | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: `{' '.join(args)}` failed:\n{result.stderr[-3000:]}")
    return result


def clone(dest: Path, overrides: list[str]) -> Path:
    """A clone of the committed project with params.yaml composed from `overrides`."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
    run("transferlab", "compose", *overrides, cwd=dest)
    return dest


def stage_runs(project: Path) -> dict:
    """The newest MLflow run of each stage in the project's store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("transferlab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return {r.data.tags.get("transferlab.stage"): r for r in runs}


def startup(repeats: int) -> dict:
    """Seconds from spawning `transferlab <stage>` to its MLflow run opening (imports, config
    checks, store), with experiment=tiny; and `transferlab --help`."""
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        project = clone(Path(folder) / "project", ["experiment=tiny"])
        for _ in range(repeats):
            for stage in STAGES:
                spawned = time.time()
                run("transferlab", stage, cwd=project)
                samples[stage].append(stage_runs(project)[stage].info.start_time / 1000 - spawned)
        dvc = dvc_noop(project, repeats)
    help_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run("transferlab", "--help", cwd=REPO)
        help_times.append(time.perf_counter() - started)
    return {
        "stage_startup_seconds": {s: spread(v) for s, v in samples.items()},
        "help_seconds": spread(help_times),
        "dvc": dvc,
    }


def dvc_noop(project: Path, repeats: int) -> dict:
    run("dvc", "repro", cwd=project)  # records dvc.lock; afterwards everything is up to date
    timings: dict[str, list[float]] = {"status": [], "repro": []}
    for _ in range(repeats):
        for command in timings:
            started = time.perf_counter()
            out = run("dvc", command, cwd=project).stdout
            timings[command].append(time.perf_counter() - started)
            if command == "repro" and "Running stage" in out:
                sys.exit(f"bench: the no-op `dvc repro` ran a stage:\n{out}")
    result = {f"{c}_seconds": spread(v) for c, v in timings.items()}
    result["repro_over_status"] = round(
        result["repro_seconds"]["median"] / result["status_seconds"]["median"], 3
    )
    return result


class PeakRSS:
    """Samples the resident memory of a process and its children every 50 ms."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process, self.peak = psutil.Process(pid), 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while True:
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return
            time.sleep(0.05)


def flops_per_token(model_dir: Path, mean_length: float, freeze: dict | None = None) -> float:
    """Training FLOPs per token: 6 x non-embedding parameters + attention (PaLM's 12·L·H·S) when every
    layer trains. Frozen layers (`finetune.freeze`) cost only their forward pass (2 x parameters +
    4·H·S) when nothing below them trains, and skip their weight gradients (2 x parameters) when
    the embeddings still do. Gradual unfreezing is not counted."""
    config = json.loads((model_dir / "config.json").read_text())
    layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    intermediate = config.get("intermediate_size", 4 * hidden)
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate
    attention = hidden * mean_length
    freeze = freeze or {}
    frozen = layers if freeze.get("backbone") else min(freeze.get("layers", 0), layers)
    embeddings_train = not (freeze.get("backbone") or freeze.get("embeddings"))
    lowest_backward = 0 if embeddings_train else frozen  # below it, no gradient is needed at all
    forward = layers * (2 * per_layer + 4 * attention)
    input_gradients = (layers - lowest_backward) * (2 * per_layer + 8 * attention)
    weight_gradients = (layers - frozen) * 2 * per_layer
    return forward + input_gradients + weight_gradients


def real_tokens(project: Path, max_length: int) -> tuple[int, float]:
    """Non-padding tokens in one pass over the train split, and their mean per example."""
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(project / "models/pretrained")
    texts = pd.read_parquet(project / "data/prepared/train.parquet")["text"].tolist()
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    return sum(lengths), sum(lengths) / len(lengths)


def pipeline_finetune(project: Path) -> dict:
    """prepare, train, then the fine-tune under a memory sampler, then evaluate: the pipeline's own
    stage commands, timed through the figures they log to MLflow."""
    for stage in ("prepare", "train"):
        run("transferlab", stage, cwd=project)
    process = subprocess.Popen(
        ["transferlab", "finetune"],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = PeakRSS(process.pid)
    _, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"bench: finetune failed:\n{stderr[-3000:]}")
    run("transferlab", "evaluate", cwd=project)
    import mlflow
    import yaml

    runs = stage_runs(project)
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    finetune = runs["finetune"]
    evaluations = sum(m.value for m in client.get_metric_history(finetune.info.run_id, "eval_runtime"))
    rates = [m.value for m in client.get_metric_history(finetune.info.run_id, "train_tokens_per_second")]
    params = yaml.safe_load((project / "params.yaml").read_text())
    epochs = json.loads((project / "metrics/finetune.json").read_text())["epochs_run"]
    tokens, mean_length = real_tokens(project, params["model"]["max_length"])
    return {
        "train_seconds": round(finetune.data.metrics["train_seconds"] - evaluations, 3),
        "real_tokens": tokens * epochs,
        "epoch_tokens_per_second": rates,
        "mean_tokens_per_example": round(mean_length, 1),
        "peak_rss_gb": round(memory.peak / 1e9, 3),
        "test_accuracy": runs["evaluate"].data.metrics["test_accuracy"],
        "precision": finetune.data.tags["precision"],  # what precision=auto resolved to
        "train_sampling": finetune.data.tags.get("train_sampling"),
        "attention": finetune.data.tags.get("attention"),
        "dropout": finetune.data.tags.get("dropout"),
        "config": {
            "precision": params["precision"],
            "max_length": params["model"]["max_length"],
            "finetune": params["finetune"],
        },
    }


def plain_finetune(project: Path, output: Path, bf16: bool) -> dict:
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    ft = params["finetune"]
    frozen = ft["freeze"]
    run(
        sys.executable,
        str(REPO / "benchmarks/plain_trainer.py"),
        str(project / "data/prepared"),
        str(project / "models/pretrained"),
        str(output),
        "--epochs",
        str(ft["epochs"]),
        "--batch-size",
        str(ft["batch_size"]),
        "--max-length",
        str(params["model"]["max_length"]),
        "--lr",
        str(ft["backbone_lr"]),
        "--seed",
        str(params["seed"]),
        *(["--bf16"] if bf16 else []),
        # the same job: what the pipeline keeps frozen, the plain script freezes too (a frozen
        # backbone is every layer and the embeddings; freeze.patterns has no plain equivalent here)
        "--freeze-layers",
        str(10**6 if frozen["backbone"] else frozen["layers"]),
        *(["--freeze-embeddings"] if frozen["backbone"] or frozen["embeddings"] else []),
        cwd=project,
    )
    return json.loads(output.read_text())


def levers(project: Path, overrides: list[str], repeats: int) -> dict:
    """One-epoch fine-tunes in the prepared project: the config, then each lever flipped; the
    rounds are interleaved so that drift in the machine's speed hits every lever alike."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    samples: dict[str, dict[str, list[float]]] = {}
    from transferlab.training.precision import cpu_has_native_bf16

    # Emulated bf16 (an AVX2-only CPU) runs about 30x slower: an epoch of it would take hours.
    flips = [lever for lever in LEVERS if lever != "precision=bf16" or cpu_has_native_bf16()]
    for round_number in range(repeats):
        for lever in ("default", *flips):
            print(f"  lever {lever} ({round_number + 1}/{repeats}) ...", flush=True)
            flipped = [] if lever == "default" else [lever]
            run("transferlab", "compose", *overrides, "finetune.epochs=1", *flipped, cwd=project)
            started = time.perf_counter()
            run("transferlab", "finetune", cwd=project)
            finetune = stage_runs(project)["finetune"]
            rate = client.get_metric_history(finetune.info.run_id, "train_tokens_per_second")[0].value
            figures = samples.setdefault(
                lever, {"tokens_per_second": [], "stage_seconds": [], "validation_accuracy": []}
            )
            figures["tokens_per_second"].append(rate)
            figures["stage_seconds"].append(time.perf_counter() - started)
            figures["validation_accuracy"].append(finetune.data.metrics["best_validation_accuracy"])
    results = {
        lever: {
            key: spread(values, 4 if key == "validation_accuracy" else 1) for key, values in figures.items()
        }
        for lever, figures in samples.items()
    }
    default = results["default"]["tokens_per_second"]["median"]
    for figures in results.values():
        figures["vs_default"] = round(figures["tokens_per_second"]["median"] / default, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a Hydra override for the fine-tune, e.g. precision=bf16",
    )
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the config's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-plain", action="store_true", help="only the pipeline's fine-tune")
    parser.add_argument("--skip-startup", action="store_true", help="no start-up / dvc figures")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="also a one-epoch fine-tune per speed lever (about 12 minutes a round here)",
    )
    parser.add_argument("--lever-rounds", type=int, default=3)
    parser.add_argument("--only-levers", action="store_true", help="prepare, train, then the levers")
    parser.add_argument(
        "--only-startup",
        action="store_true",
        help="only the stage start-up, --help and dvc figures (about 5 minutes here)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results.json")
    args = parser.parse_args()
    overrides = args.override + ([f"finetune.epochs={args.epochs}"] if args.epochs else [])

    results: dict = {"machine": machine(), "overrides": overrides}
    print(json.dumps(results["machine"]), flush=True)
    if args.only_levers:
        with tempfile.TemporaryDirectory(prefix="bench-levers-") as folder:
            project = clone(Path(folder) / "project", overrides)
            for stage in ("prepare", "train"):
                run("transferlab", stage, cwd=project)
            results["levers"] = levers(project, overrides, args.lever_rounds)
        return write(results, args.output)
    if args.only_startup:
        return write(results | startup(args.repeats), args.output)
    print("matmul peak ...", flush=True)
    native = results["machine"]["native_bf16"]
    results["matmul_peak_gflops"] = {
        "fp32": matmul_peak("fp32"),
        "bf16": matmul_peak("bf16", *(() if native else (256, 2))),
    }
    if not args.skip_startup:
        print("start-up and dvc ...", flush=True)
        results |= startup(args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as folder:
        project = clone(Path(folder) / "project", overrides)
        print("pipeline fine-tune ...", flush=True)
        ours = pipeline_finetune(project)
        per_token = flops_per_token(
            project / "models/pretrained",
            ours["mean_tokens_per_example"],
            ours["config"]["finetune"]["freeze"],
        )
        figures = {"pipeline": ours}
        if not args.skip_plain:
            print("plain Trainer fine-tune ...", flush=True)
            figures["plain_trainer"] = plain_finetune(
                # the machine's best precision, as a user who measured would pass it
                project,
                Path(folder) / "plain.json",
                bf16=results["machine"]["precision_auto"] == "bf16",
            )
        if args.levers:
            print("levers ...", flush=True)
            results["levers"] = levers(project, overrides, args.lever_rounds)
        shutil.rmtree(project / ".git", ignore_errors=True)
    for figure in figures.values():
        # Per-epoch rates exclude evaluation and checkpoint saving; the overall figure includes saving.
        figure["tokens_per_second"] = spread(figure.pop("epoch_tokens_per_second"), 1)
        figure["overall_tokens_per_second"] = round(figure["real_tokens"] / figure["train_seconds"], 1)
        achieved = figure["tokens_per_second"]["median"] * per_token / 1e9
        figure["model_gflops"] = round(achieved, 1)
        used = figure["precision"]  # MFU against the peak of the precision the run actually used
        figure["mfu"] = round(achieved / results["matmul_peak_gflops"][used]["median"], 3)
        figure["mfu_of"] = f"{used} matmul peak"
    results["finetune"] = figures
    if "plain_trainer" in figures:
        results["speedup_over_plain_trainer"] = round(
            figures["pipeline"]["tokens_per_second"]["median"]
            / figures["plain_trainer"]["tokens_per_second"]["median"],
            3,
        )
    write(results, args.output)


def write(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {output}")


if __name__ == "__main__":
    main()
