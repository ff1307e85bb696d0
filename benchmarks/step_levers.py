"""Per-step cost of each speed lever, interleaved in one process, for several batch shapes.

A full lever round (`bench.py --levers`) fine-tunes once per lever: close to an hour per round on
an AVX2-only CPU. This times single MiniLM training steps instead (forward, backward, gradient
clipping, AdamW), alternating the variants step by step so that drift in the machine's speed hits
each alike, for a few shapes of batch (batch x tokens): BBC's 32 x 128, short texts' 32 x 48,
long documents' 8 x 512, unpadded and padded (lengths spread evenly from the full width to half).
bf16 is timed only where the CPU runs it natively (emulated, one step takes about a minute); its
slowdown there is recorded from one step.

    python benchmarks/step_levers.py [--steps 8] [--output benchmarks/step_levers.json]
    python benchmarks/step_levers.py --malloc-rounds 3 [--output benchmarks/step_levers-malloc.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REPO, machine  # noqa: E402

SHAPES = ((32, 128, False), (32, 48, False), (8, 512, False), (8, 512, True))  # batch, tokens, padded
# Each variant: a name and what it changes from the default (lean_eager, fused, no attention
# dropout, packed dropout masks).
VARIANTS = {
    "default": {},
    "runtime.attention=eager": {"attention": "eager"},
    "runtime.attention=sdpa": {"attention": "sdpa"},
    "runtime.optimizer=foreach": {"optimizer": {"foreach": True}},
    "runtime.optimizer=for_loop": {"optimizer": {"foreach": False}},
    "finetune.attention_dropout=null (0.1)": {"attention_dropout": 0.1},
    "runtime.fast_dropout=false": {"fast_dropout": False},
    "runtime.threads=1": {"threads": 1},
    "runtime.compile=true": {"compile": True},  # inductor, as Trainer's torch_compile; timed warm
}


def build(options: dict):
    import torch
    from transformers import AutoModelForSequenceClassification

    from transferlab.config.schema import MINILM
    from transferlab.models import lean_attention
    from transferlab.models.packed_dropout import use_packed_dropout
    from transferlab.packages import package_path

    torch.manual_seed(0)
    path = package_path(*MINILM.removeprefix("package:").split("/", 1))
    net = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=5, attention_probs_dropout_prob=options.get("attention_dropout", 0.0)
    )
    lean_attention.register()
    net.set_attn_implementation(options.get("attention", lean_attention.NAME))
    if options.get("fast_dropout", True):
        use_packed_dropout(net)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, **options.get("optimizer", {"fused": True}))
    return (torch.compile(net) if options.get("compile") else net), optimizer


def step(net, optimizer, batch, threads: int, bf16: bool) -> float:
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = net(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and shape")
    parser.add_argument(
        "--output",
        type=Path,
        help="default: benchmarks/step_levers.json (step_levers-malloc.json with --malloc-rounds)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="time only these (and the default); --malloc-rounds times its own two",
    )
    parser.add_argument(
        "--reuse-freed-memory",
        choices=("true", "false"),
        default="true",
        help="runtime.reuse_freed_memory for this process (the pipeline's default: true)",
    )
    parser.add_argument(
        "--malloc-rounds",
        type=int,
        default=0,
        metavar="N",
        help="time runtime.reuse_freed_memory instead: it is process-wide, so N rounds of two "
        "processes in turn, with it and without, each timing the default (and bf16 where native)",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.output is None:  # the two modes write different tables: never one over the other
        args.output = REPO / (
            "benchmarks/step_levers-malloc.json" if args.malloc_rounds else "benchmarks/step_levers.json"
        )
    results = time_malloc(args) if args.malloc_rounds else time_variants(args)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")


def time_variants(args) -> dict:
    import torch

    from transferlab.training.runtime import keep_freed_memory

    if args.reuse_freed_memory == "true":
        keep_freed_memory()  # the pipeline's default
    facts = machine()
    threads = torch.get_num_threads()
    variants = dict(VARIANTS)
    variants["precision=bf16"] = {"bf16": True}
    if facts["native_bf16"]:  # emulated bf16 is timed once, for its slowdown
        variants["precision=bf16, runtime.fast_dropout=false"] = {"bf16": True, "fast_dropout": False}
        variants["precision=bf16, runtime.attention=eager"] = {"bf16": True, "attention": "eager"}
        variants["precision=bf16, runtime.compile=true"] = {"bf16": True, "compile": True}
    if args.variants:
        unknown = set(args.variants) - set(variants)
        if unknown:
            raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(variants)}")
        variants = {name: variants[name] for name in variants if name in {"default", *args.variants}}
    built = {name: build(options) for name, options in variants.items()}
    results: dict = {"machine": facts, "steps": args.steps, "shapes": {}}
    for batch_size, tokens, padded in SHAPES:
        generator = torch.Generator().manual_seed(0)
        mask = torch.ones(batch_size, tokens, dtype=torch.long)
        if padded:
            for row in range(batch_size):
                mask[row, tokens - row * tokens // (2 * batch_size) :] = 0
        batch = {
            "input_ids": torch.randint(1000, 20000, (batch_size, tokens), generator=generator),
            "attention_mask": mask,
            "labels": torch.randint(0, 5, (batch_size,), generator=generator),
        }
        label = f"{batch_size}x{tokens}" + (" padded" if padded else "")
        samples: dict[str, list[float]] = {name: [] for name in variants}
        native = facts["native_bf16"]
        for round_number in range(args.steps + 2):  # the first two are warm-up
            for name, options in variants.items():
                if options.get("bf16") and not native and round_number > 0:
                    continue  # emulated bf16: one step tells the story
                bf16 = options.get("bf16", False)
                seconds = step(*built[name], batch, options.get("threads", threads), bf16)
                if round_number >= 2 or (options.get("bf16") and not native):
                    samples[name].append(seconds)
        default = statistics.median(samples["default"])
        shape = {}
        for name, times in samples.items():
            median = statistics.median(times)
            shape[name] = {
                "seconds_per_step": round(median, 3),
                "min": round(min(times), 3),
                "n": len(times),
                "tokens_per_second": round(batch_size * tokens / median, 1),
                "vs_default": round(default / median, 3),
            }
        results["shapes"][label] = shape
        print(json.dumps({label: shape}, indent=1), flush=True)
    return results


def time_malloc(args) -> dict:
    """Per shape and variant: seconds per step of each process, with and without the setting."""
    import subprocess
    import tempfile

    facts = machine()
    names = ["default", "precision=bf16"] if facts["native_bf16"] else ["default"]
    samples: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.malloc_rounds):
            for setting in ("true", "false"):
                output = Path(scratch) / f"{round_number}-{setting}.json"
                command = [sys.executable, __file__, "--steps", str(args.steps), "--variants", *names]
                command += ["--reuse-freed-memory", setting, "--output", str(output)]
                if subprocess.run(command, stdout=subprocess.DEVNULL).returncode:
                    raise SystemExit(
                        f"the round with runtime.reuse_freed_memory={setting} failed: its error is above"
                    )
                for shape, timed in json.loads(output.read_text())["shapes"].items():
                    for name in names:
                        per_setting = samples.setdefault(shape, {}).setdefault(
                            name, {"true": [], "false": []}
                        )
                        per_setting[setting].append(timed[name]["seconds_per_step"])
    summary = {
        shape: {
            name: {
                "seconds_per_step_with": times["true"],
                "seconds_per_step_without": times["false"],
                "speed_up": round(statistics.median(times["false"]) / statistics.median(times["true"]), 3),
            }
            for name, times in timed.items()
        }
        for shape, timed in samples.items()
    }
    print(json.dumps(summary, indent=1))
    return {
        "machine": facts,
        "steps": args.steps,
        "rounds": args.malloc_rounds,
        "reuse_freed_memory": summary,
    }


if __name__ == "__main__":
    main()
