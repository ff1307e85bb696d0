"""The comparison's scores, gathered from the finished MLflow runs: one summary row per experiment
(mean ± sd over its seeds) and the seed-by-seed paired tests against the TF-IDF baseline."""

from __future__ import annotations

import logging

from transferlab.errors import UserError
from transferlab.report.significance import bootstrap_difference_ci, discordant, mcnemar_exact, mean_sd

log = logging.getLogger(__name__)


def technique(cfg) -> str:
    ft, layers = cfg.finetune, cfg.finetune.freeze.layers
    frozen = [
        name
        for name, on in (
            ("embeddings", ft.freeze.embeddings),
            (f"lowest {layers} layer" + "s" * (layers > 1), layers),
            ("by pattern", ft.freeze.patterns),
        )
        if on
    ]
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
            table = pd.read_csv(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=PREDICTIONS, dst_path=folder
                )
            )
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    if "baseline" not in table:
        return None
    return table["label"].to_numpy(), table["predicted"].to_numpy(), table["baseline"].to_numpy()


def seed_result(cfg, runs: dict) -> dict:
    """One seed's scores, and its paired tests against the baseline when its predictions are there."""
    metrics = {stage: run.data.metrics if run else {} for stage, run in runs.items()}
    evaluate = metrics["evaluate"]
    result = {
        "seed": cfg.seed,
        "accuracy": evaluate.get("test_accuracy"),
        "macro_f1": evaluate.get("test_macro_f1"),
        "baseline": evaluate.get("baseline_test_accuracy"),
        "validation": metrics["finetune"].get("best_validation_accuracy"),
        "seconds": sum(metrics[stage].get("train_seconds", 0.0) for stage in ("train", "finetune")),
        "parameters": metrics["finetune"].get("parameters_total"),
        "paired": None,
    }
    if (predictions := paired_predictions(runs["evaluate"])) is not None:
        truth, model, baseline = predictions
        result["paired"] = (model == truth, baseline == truth)  # right or wrong, article by article
        result["b"], result["c"] = discordant(truth, model, baseline)
        result["p"] = mcnemar_exact(result["b"], result["c"])
        result["ci"] = bootstrap_difference_ci([result["paired"]])
    return result


def summary(name: str, cfg, found: list[dict], missing: list) -> dict:
    deltas = [r["accuracy"] - r["baseline"] for r in found if r["baseline"] is not None]
    validation = [r["validation"] for r in found]
    paired = [r["paired"] for r in found if r["paired"] is not None]
    return {
        "experiment": name,
        "model": model_name(cfg),
        "init": cfg.model.init,
        "pretraining steps": cfg.train.steps,
        "fine-tune technique": technique(cfg),
        "seeds": [r["seed"] for r in found],
        "missing": missing,
        "per_seed": found,
        "accuracy": mean_sd(r["accuracy"] for r in found),
        "macro_f1": mean_sd(r["macro_f1"] for r in found),
        # what a default is chosen by (the test split stays out of selection); only if every seed has it
        "validation": mean_sd(validation) if None not in validation else None,
        "validation_per_window": cfg.model.truncation == "windows",  # the fine-tune scores windows
        "delta": mean_sd(deltas)[0] if deltas else None,
        # the pooled CI only when every seed's predictions are there: else it would not match Δ
        "ci": bootstrap_difference_ci(paired) if paired and len(paired) == len(found) else None,
        "seconds": mean_sd(r["seconds"] for r in found)[0],
        "parameters": found[0]["parameters"],
    }


def seed_list(seeds) -> list:
    """Each seed once, in order; [None] for the config's own seed."""
    return list(dict.fromkeys(seeds)) if seeds else [None]


def compared_config(name: str, seed, config_dir):
    """The checked config of one comparison run; the comparison scores classifiers only."""
    from transferlab.config.compose import compose
    from transferlab.config.load import validated

    overrides = [f"experiment={name}", *([f"seed={seed}"] if seed is not None else [])]
    cfg = validated(compose(overrides, config_dir), " ".join(overrides))
    if cfg.task != "classification":
        raise UserError(
            f"experiment={name} is task={cfg.task}: the comparison scores classifiers against the "
            "TF-IDF baseline (a causal LM's perplexity and generations: docs/causal-lm.md)"
        )
    return cfg


def collect(experiments, config_dir, seeds=None) -> tuple[list[dict], dict]:
    """One summary row per experiment with finished runs, and the baseline's scores per seed (from
    the first experiment that has that seed)."""
    import os

    import mlflow
    from tqdm.auto import tqdm

    from transferlab.tracking import fingerprint, latest_stage_run, tracking_uri
    from transferlab.tracking.identity import masked
    from transferlab.tracking.store import check_reachable

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per predictions.csv
    rows, baselines = [], {}
    for name in tqdm(experiments, desc="collecting runs", unit="experiment", disable=None):
        found, missing = [], []
        for seed in seed_list(seeds):
            cfg = compared_config(name, seed, config_dir)
            uri = tracking_uri(cfg)
            check_reachable(uri)
            mlflow.set_tracking_uri(uri)
            try:
                experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
            except Exception as err:  # a corrupt or foreign file, a server that errs: one line
                raise UserError(
                    f"cannot read MLflow tracking store {masked(uri)}: {str(err).splitlines()[0]}"
                ) from None
            if experiment is None:
                raise UserError(
                    f"no MLflow experiment {cfg.tracking.experiment!r} in {masked(uri)}: "
                    "run the comparison first (make compare)"
                )
            runs = {
                stage: latest_stage_run(stage, fingerprint(cfg, stage), experiment.experiment_id)
                for stage in ("train", "finetune", "evaluate")
            }
            if runs["evaluate"] is None:
                log.warning(
                    "no finished run for experiment=%s seed=%s yet: "
                    "`dvc exp run -S experiment=%s -S seed=%s`",
                    name,
                    cfg.seed,
                    name,
                    cfg.seed,
                )
                missing.append(cfg.seed)
                continue
            found.append(seed_result(cfg, runs))
            evaluate = runs["evaluate"].data.metrics
            if "baseline_test_accuracy" in evaluate and cfg.seed not in baselines:
                baselines[cfg.seed] = {
                    "accuracy": evaluate["baseline_test_accuracy"],
                    "macro_f1": evaluate["baseline_test_macro_f1"],
                    "seconds": evaluate.get("baseline_test_fit_seconds") or 0.0,
                }
        if found:
            rows.append(summary(name, cfg, found, missing))
    return rows, baselines
