"""`transferlab report`: the transfer-learning comparison as a table and a plot, built from the
finished MLflow runs of the comparison experiments (nothing is re-run).

Each experiment config is composed once per seed (`experiment=<name> seed=<s>`; without --seeds,
the config's own seed), its stage fingerprints computed, and the latest finished train / finetune /
evaluate runs with those fingerprints looked up; a run that DVC restored from its cache still
counts, since its fingerprint is the same. Scores are mean ± sd over the seeds found. Against the
TF-IDF baseline, each evaluate run's predictions.csv pairs both predictions on the same test
articles: exact McNemar test per seed, paired bootstrap CI of the accuracy difference
(transferlab.significance).
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
    "compare_pretrained/frozen_lower_layers",  # the default
    "compare_pretrained/gradual_unfreezing",
    "compare_pretrained/dapt",
    "pretraining_budget/steps_1600",  # with the two compare_scratch rows: the pretraining-budget curve
)
RESAMPLES = 10_000  # paired bootstrap resamples (generator seed 0: the same report every time)
HOW_TO_READ = f"""
How to read it:
- mean ± sd: the mean and the sample standard deviation over the seeds run; a row with 1 seed has
  no sd (one training run: its spread is unknown). Train time is the mean per seed.
- Validation accuracy: the fine-tune's best epoch on the validation split, what a default is
  chosen by (the test split is not). With model.truncation=windows it counts windows, not articles
  ("per window"), so those rows cannot be ranked with the others on it.
- The seed also draws the train/validation/test split (stage prepare), so every seed has its own
  test articles and its own baseline fit; the baseline row is the mean ± sd over those splits.
- The paired tests compare an experiment with the baseline on the same test articles, always
  within one seed's split, from the evaluate run's predictions.csv. McNemar: exact two-sided test
  on the articles only one of the two got right (b: only the model, c: only the baseline), one
  p-value per seed in seed order. The 95% CI of Δ accuracy (model − baseline) is a paired
  bootstrap: the test articles of every seed drawn with replacement ({RESAMPLES:,} times), Δ
  averaged over the seeds. Neither covers a split or seed not run, and the p-values are not
  corrected for the number of comparisons.
"""


def technique(cfg) -> str:
    ft, layers = cfg.finetune, cfg.finetune.freeze.layers
    frozen = [name for name, on in (("embeddings", ft.freeze.embeddings), (f"lowest {layers} layer"
              + "s" * (layers > 1), layers), ("by pattern", ft.freeze.patterns)) if on]
    parts = ["frozen backbone"] if ft.freeze.backbone else [" + ".join(frozen) + " frozen"] if frozen else []
    if ft.unfreeze.every:
        parts.append(f"gradual unfreezing /{ft.unfreeze.every} {ft.unfreeze.unit}")
    if ft.layer_lr_decay < 1:
        parts.append(f"layer LR decay {ft.layer_lr_decay:g}")
    if ft.hidden_dropout is not None:
        parts.append(f"hidden dropout {ft.hidden_dropout:g}")
    return ", ".join(parts) or "full fine-tune"


def model_name(cfg) -> str:
    if cfg.model.init == "pretrained":
        name = cfg.model.name_or_path
        if name.startswith("package:"):  # package:DIST/PATH -> the distribution's name
            return name.removeprefix("package:").split("/")[0]
        return name.rstrip("/").split("/")[-1]
    return f"{cfg.model.arch} {cfg.model.num_layers}x{cfg.model.hidden_size}"


def paired_predictions(run):
    """(true label, model prediction, baseline prediction) per test article, from an evaluate run's
    predictions.csv, or None: a run from before the file existed, or evaluate.baseline=false."""
    import tempfile

    import mlflow
    import pandas as pd

    from transferlab.tasks.classification.evaluate import PREDICTIONS

    try:
        with tempfile.TemporaryDirectory(prefix="transferlab-report-") as folder:
            table = pd.read_csv(mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=PREDICTIONS, dst_path=folder))
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    if "baseline" not in table:
        return None
    return table["label"].to_numpy(), table["predicted"].to_numpy(), table["baseline"].to_numpy()


def seed_result(cfg, runs: dict) -> dict:
    """One seed's scores, and its paired tests against the baseline when its predictions are there."""
    from transferlab.significance import bootstrap_difference_ci, discordant, mcnemar_exact

    metrics = {stage: run.data.metrics if run else {} for stage, run in runs.items()}
    evaluate = metrics["evaluate"]
    result = {"seed": cfg.seed, "accuracy": evaluate.get("test_accuracy"),
              "macro_f1": evaluate.get("test_macro_f1"), "baseline": evaluate.get("baseline_test_accuracy"),
              "validation": metrics["finetune"].get("best_validation_accuracy"),
              "seconds": sum(metrics[stage].get("train_seconds", 0.0) for stage in ("train", "finetune")),
              "parameters": metrics["finetune"].get("parameters_total"), "paired": None}
    if (predictions := paired_predictions(runs["evaluate"])) is not None:
        truth, model, baseline = predictions
        result["paired"] = (model == truth, baseline == truth)  # right or wrong, article by article
        result["b"], result["c"] = discordant(truth, model, baseline)
        result["p"] = mcnemar_exact(result["b"], result["c"])
        result["ci"] = bootstrap_difference_ci([result["paired"]], RESAMPLES)
    return result


def summary(name: str, cfg, found: list[dict], missing: list) -> dict:
    from transferlab.significance import bootstrap_difference_ci, mean_sd

    deltas = [r["accuracy"] - r["baseline"] for r in found if r["baseline"] is not None]
    validation = [r["validation"] for r in found]
    paired = [r["paired"] for r in found if r["paired"] is not None]
    return {
        "experiment": name, "model": model_name(cfg), "init": cfg.model.init,
        "pretraining steps": cfg.train.steps, "fine-tune technique": technique(cfg),
        "seeds": [r["seed"] for r in found], "missing": missing, "per_seed": found,
        "accuracy": mean_sd(r["accuracy"] for r in found),
        "macro_f1": mean_sd(r["macro_f1"] for r in found),
        # what a default is chosen by (the test split stays out of selection); only if every seed has it
        "validation": mean_sd(validation) if None not in validation else None,
        "validation_per_window": cfg.model.truncation == "windows",  # the fine-tune scores windows
        "delta": mean_sd(deltas)[0] if deltas else None,
        # the pooled CI only when every seed's predictions are there: else it would not match Δ
        "ci": bootstrap_difference_ci(paired, RESAMPLES) if paired and len(paired) == len(found) else None,
        "seconds": mean_sd(r["seconds"] for r in found)[0],
        "parameters": found[0]["parameters"],
    }


def collect(experiments, config_dir, seeds=None) -> tuple[list[dict], dict]:
    """One summary row per experiment with finished runs, and the baseline's scores per seed (from
    the first experiment that has that seed)."""
    import os

    import mlflow
    from tqdm.auto import tqdm

    from transferlab.config.compose import compose
    from transferlab.tracking import fingerprint, latest_stage_run, tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per predictions.csv
    rows, baselines = [], {}
    for name in tqdm(experiments, desc="collecting runs", unit="experiment", disable=None):
        found, missing = [], []
        for seed in dict.fromkeys(seeds) if seeds else [None]:  # each seed once, in order
            cfg = compose([f"experiment={name}", *([f"seed={seed}"] if seed is not None else [])], config_dir)
            mlflow.set_tracking_uri(tracking_uri(cfg))
            experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
            if experiment is None:
                raise UserError(f"no MLflow experiment {cfg.tracking.experiment!r} in {tracking_uri(cfg)}: "
                                "run the comparison first (make compare)")
            runs = {stage: latest_stage_run(stage, fingerprint(cfg, stage), experiment.experiment_id)
                    for stage in ("train", "finetune", "evaluate")}
            if runs["evaluate"] is None:
                log.warning("no finished run for experiment=%s seed=%s yet: "
                            "`dvc exp run -S experiment=%s -S seed=%s`", name, cfg.seed, name, cfg.seed)
                missing.append(cfg.seed)
                continue
            found.append(seed_result(cfg, runs))
            evaluate = runs["evaluate"].data.metrics
            if "baseline_test_accuracy" in evaluate and cfg.seed not in baselines:
                baselines[cfg.seed] = {"accuracy": evaluate["baseline_test_accuracy"],
                                       "macro_f1": evaluate["baseline_test_macro_f1"],
                                       "seconds": evaluate.get("baseline_test_fit_seconds") or 0.0}
        if found:
            rows.append(summary(name, cfg, found, missing))
    return rows, baselines


def seeds_cell(seeds: list, missing: list = ()) -> str:
    text = f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})"
    return text + (f"; not run: {', '.join(map(str, missing))}" if missing else "")


def interval(ci) -> str:
    from transferlab.significance import signed_text

    return f"[{signed_text(ci[0])}, {signed_text(ci[1])}]" if ci else ""


def validation_cell(row: dict) -> str:
    from transferlab.significance import mean_sd_cell

    if not row["validation"]:
        return "-"
    return mean_sd_cell(row["validation"]) + (" (per window)" if row["validation_per_window"] else "")


def markdown(rows: list[dict], baselines: dict) -> str:
    from transferlab.significance import mean_sd, mean_sd_cell, signed_text

    columns = ["experiment", "model", "init", "pretraining steps", "fine-tune technique", "seeds",
               "validation accuracy", "test accuracy", "test macro-F1", "Δ accuracy vs baseline [95% CI]",
               "McNemar p vs baseline (per seed)", "train time (s)", "parameters"]

    def line(cells) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [line(columns), "|" + "---|" * len(columns)]
    for row in rows:
        delta = "-" if row["delta"] is None else f"{signed_text(row['delta'])} {interval(row['ci'])}".strip()
        p_values = ", ".join(f"{r['p']:.3g}" for r in row["per_seed"] if "p" in r) or "-"
        parameters = "" if row["parameters"] is None else f"{row['parameters']:,.0f}"
        lines.append(line([row["experiment"], row["model"], row["init"], row["pretraining steps"],
                           row["fine-tune technique"], seeds_cell(row["seeds"], row["missing"]),
                           validation_cell(row),
                           mean_sd_cell(row["accuracy"]), mean_sd_cell(row["macro_f1"]), delta, p_values,
                           f"{row['seconds']:,.0f}", parameters]))
    if baselines:
        scores = list(baselines.values())
        lines.append(line(["baseline", "TF-IDF + logistic regression", "-", "-", "-",
                           seeds_cell(list(baselines)), "-",
                           mean_sd_cell(mean_sd(s["accuracy"] for s in scores)),
                           mean_sd_cell(mean_sd(s["macro_f1"] for s in scores)), "-", "-",
                           f"{mean_sd(s['seconds'] for s in scores)[0]:,.0f}", "-"]))
    detail = ["experiment", "seed", "test accuracy", "baseline accuracy", "Δ", "b (only the model right)",
              "c (only the baseline right)", "McNemar p", "paired bootstrap 95% CI of Δ"]
    lines += ["", "## Per seed: each experiment against the baseline on the same test articles", "",
              line(detail), "|" + "---|" * len(detail)]
    for row in rows:
        for r in row["per_seed"]:
            baseline = "-" if r["baseline"] is None else f"{r['baseline']:.4f}"
            delta = "-" if r["baseline"] is None else signed_text(r["accuracy"] - r["baseline"])
            tests = [r["b"], r["c"], f"{r['p']:.3g}", interval(r["ci"])] if "p" in r else \
                ["-", "-", "- (no predictions.csv with a baseline)", "-"]
            accuracy = f"{r['accuracy']:.4f}"
            lines.append(line([row["experiment"], r["seed"], accuracy, baseline, delta, *tests]))
    return "\n".join(lines) + "\n" + HOW_TO_READ


def accuracy_axis(lowest: float) -> tuple[float, float]:
    """An axis that shows the differences: from a little below the lowest mean − sd (not from 0,
    where 0.95 and 0.97 look the same) to just above 1.0."""
    span = max(1.0 - lowest, 0.01)
    return max(0.0, lowest - 0.15 * span), 1.0 + 0.02 * span


def error_bar_plot(path: Path, rows: list[dict], baselines: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferlab.significance import mean_sd

    means = [row["accuracy"][0] for row in rows]
    sds = [row["accuracy"][1] or 0.0 for row in rows]
    lows = [m - s for m, s in zip(means, sds, strict=True)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 5.5))
    x = list(range(len(rows)))
    ax.errorbar(x, means, yerr=sds, fmt="o", capsize=5, color="tab:blue", clip_on=False,
                label="experiment: mean ± sd over seeds")
    for i, row in enumerate(rows):
        ax.annotate(f"{means[i]:.3f} (n={len(row['seeds'])})", (i, means[i]), xytext=(7, 0),
                    textcoords="offset points", va="center", fontsize=8)
    if baselines:
        mean, sd = mean_sd(s["accuracy"] for s in baselines.values())
        ax.axhline(mean, color="tab:gray", linestyle="--",
                   label=f"TF-IDF baseline: {mean:.3f}" + (f" ± {sd:.3f}" if sd else ""))
        if sd:
            ax.axhspan(mean - sd, mean + sd, color="tab:gray", alpha=0.15)
        lows.append(mean - (sd or 0.0))
    ax.set_xticks(x, [row["experiment"] for row in rows], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(rows) - 0.2)
    ax.set_ylim(*accuracy_axis(min(lows)))
    ax.set_ylabel("test accuracy (the axis does not start at 0)")
    ax.set_title("Test accuracy, mean ± sd over seeds", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def run(experiments=DEFAULT_EXPERIMENTS, config_dir="conf", output=REPORTS, seeds=None) -> list[dict]:
    from transferlab import pretraining_budget
    from transferlab.outputs import staged_outputs

    rows, baselines = collect(experiments, config_dir, seeds)
    if not rows:
        raise UserError("no finished comparison runs in MLflow yet: run `make compare` first")
    curves = pretraining_budget.curves(rows)
    with staged_outputs() as outs:
        outs.path(Path(output) / "comparison.md").write_text(
            "# Transfer learning comparison\n\n" + markdown(rows, baselines)
            + ("\n" + pretraining_budget.markdown(curves) if curves else ""))
        error_bar_plot(outs.path(Path(output) / "comparison.png"), rows, baselines)
        if curves:
            pretraining_budget.plot(outs.path(Path(output) / "pretraining_budget.png"), curves)
    log.info("wrote %s/comparison.md and comparison.png (%d experiments)", output, len(rows))
    return rows
