"""`transferlab report`: the transfer-learning comparison as a table and a bar plot, built from the
finished MLflow runs of the comparison experiments (nothing is re-run).

Each experiment config is composed, its stage fingerprints computed, and the latest finished
train / finetune / evaluate runs with those fingerprints looked up; a run that DVC restored from its
cache still counts, since its fingerprint is the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.errors import UserError

log = logging.getLogger(__name__)
REPORTS = Path("reports")
DEFAULT_EXPERIMENTS = (
    "compare_scratch/no_pretraining",
    "compare_scratch/mlm_pretraining",
    "torch_transformer",
    "compare_pretrained/frozen_backbone",
    "compare_pretrained/full_finetune",
    "compare_pretrained/gradual_unfreezing",
    "compare_pretrained/dapt",
)


def technique(cfg) -> str:
    ft = cfg.finetune
    parts = []
    if ft.freeze.backbone:
        parts.append("frozen backbone")
    elif ft.freeze.layers or ft.freeze.embeddings or ft.freeze.patterns:
        parts.append("partly frozen")
    if ft.unfreeze.every:
        parts.append(f"gradual unfreezing /{ft.unfreeze.every} {ft.unfreeze.unit}")
    if ft.layer_lr_decay < 1:
        parts.append(f"layer LR decay {ft.layer_lr_decay:g}")
    return ", ".join(parts) or "full fine-tune"


def model_name(cfg) -> str:
    if cfg.model.init == "pretrained":
        name = cfg.model.name_or_path
        if name.startswith("package:"):  # package:DIST/PATH -> the distribution's name
            return name.removeprefix("package:").split("/")[0]
        return name.rstrip("/").split("/")[-1]
    return f"{cfg.model.arch} {cfg.model.num_layers}x{cfg.model.hidden_size}"


def collect(experiments, config_dir) -> tuple[list[dict], dict | None]:
    import mlflow

    from transferlab.config.compose import compose
    from transferlab.tracking import fingerprint, latest_stage_run, tracking_uri

    rows, baseline = [], None
    from tqdm.auto import tqdm

    for name in tqdm(experiments, desc="collecting runs", unit="experiment", disable=None):
        cfg = compose([f"experiment={name}"], config_dir)
        mlflow.set_tracking_uri(tracking_uri(cfg))
        experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is None:
            raise UserError(f"no MLflow experiment {cfg.tracking.experiment!r} in {tracking_uri(cfg)}: "
                            "run the comparison first (make compare)")
        runs = {stage: latest_stage_run(stage, fingerprint(cfg, stage), experiment.experiment_id)
                for stage in ("train", "finetune", "evaluate")}
        if runs["evaluate"] is None:
            log.warning("no finished run for experiment=%s yet: `dvc exp run -S experiment=%s`", name, name)
            continue
        metrics = {stage: run.data.metrics if run else {} for stage, run in runs.items()}
        rows.append({
            "experiment": name,
            "model": model_name(cfg),
            "init": cfg.model.init,
            "pretraining steps": cfg.train.steps,
            "fine-tune technique": technique(cfg),
            "test accuracy": metrics["evaluate"].get("test_accuracy"),
            "test macro-F1": metrics["evaluate"].get("test_macro_f1"),
            "train time (s)": (metrics["train"].get("train_seconds", 0.0)
                               + metrics["finetune"].get("train_seconds", 0.0)),
            "parameters": metrics["finetune"].get("parameters_total"),
        })
        if "baseline_test_accuracy" in metrics["evaluate"] and baseline is None:
            baseline = {"accuracy": metrics["evaluate"]["baseline_test_accuracy"],
                        "macro_f1": metrics["evaluate"]["baseline_test_macro_f1"],
                        "seconds": metrics["evaluate"].get("baseline_test_fit_seconds")}
    return rows, baseline


def markdown(rows: list[dict], baseline: dict | None) -> str:
    columns = ["experiment", "model", "init", "pretraining steps", "fine-tune technique",
               "test accuracy", "test macro-F1", "train time (s)", "parameters"]

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if value <= 1 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    if baseline:
        lines.append(f"| baseline | TF-IDF + logistic regression | - | - | - | {baseline['accuracy']:.4f} "
                     f"| {baseline['macro_f1']:.4f} | {baseline['seconds'] or 0:,.0f} | - |")
    return "\n".join(lines) + "\n"


def accuracy_axis(values: list[float]) -> tuple[float, float]:
    """An axis that shows the differences: from a little below the lowest accuracy (not from 0,
    where 0.95 and 0.97 look the same), with room on the right for the value labels."""
    low, high = min(values), max(values)
    spread = max(high - low, 0.01)
    return max(0.0, low - 0.5 * spread), min(1.0, high) + 0.35 * spread


def bar_plot(path: Path, rows: list[dict], baseline: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["experiment"] for r in rows] + (["TF-IDF baseline"] if baseline else [])
    values = [r["test accuracy"] or 0 for r in rows] + ([baseline["accuracy"]] if baseline else [])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    bars = ax.barh(names, values, color=["tab:blue"] * len(rows) + ["tab:gray"] * bool(baseline))
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set_xlim(*accuracy_axis(values))
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (the axis does not start at 0)")
    ax.set_title("Transfer learning comparison (held-out test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def run(experiments=DEFAULT_EXPERIMENTS, config_dir="conf", output=REPORTS) -> list[dict]:
    from transferlab.outputs import staged_outputs

    rows, baseline = collect(experiments, config_dir)
    if not rows:
        raise UserError("no finished comparison runs in MLflow yet: run `make compare` first")
    with staged_outputs() as outs:
        outs.path(Path(output) / "comparison.md").write_text(
            "# Transfer learning comparison\n\n" + markdown(rows, baseline))
        bar_plot(outs.path(Path(output) / "comparison.png"), rows, baseline)
    log.info("wrote %s/comparison.md and comparison.png (%d experiments)", output, len(rows))
    return rows
