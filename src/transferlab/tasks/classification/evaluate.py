"""Stage `evaluate`: the fine-tuned model on the held-out test split (read here and only here):
metrics, a confusion matrix and learning curves, as DVC metrics/plots and PNG files, and the task's
reports (classification report, misclassified examples) in reports/evaluate/.
task=causal_lm: test perplexity and generations from prompts (tasks/causal_lm/evaluate.py; the
switch is transferlab.stages)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transferlab.contracts import EVALUATE_METRICS as METRICS
from transferlab.contracts import FINETUNED, PLOTS, REPORTS, TRAINING_LOG
from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.models.positions import check_positions
from transferlab.training.curves import CURVE_PNG, write_csv, write_learning_curves

log = logging.getLogger(__name__)
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS = "per_class.json"  # precision, recall, F1 and support of each label, in reports/evaluate/
PREDICTIONS = "predictions.csv"  # per test article: label, model and baseline ids (the report tests them)


def scores(y_true, y_pred, labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    ids = list(range(len(labels)))
    report = classification_report(
        y_true, y_pred, labels=ids, target_names=labels, output_dict=True, zero_division=0
    )
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)), 6),
        "test_examples": len(y_true),
        "per_class": {
            name: {
                "precision": round(report[name]["precision"], 6),
                "recall": round(report[name]["recall"], 6),
                "f1": round(report[name]["f1-score"], 6),
                "support": int(report[name]["support"]),
            }
            for name in labels
        },
    }


def classification_report_text(y_true, y_pred, labels: list[str]) -> str:
    from sklearn.metrics import classification_report

    return classification_report(
        y_true, y_pred, labels=list(range(len(labels))), target_names=labels, digits=4, zero_division=0
    )


def misclassified(test, probabilities, labels: list[str], limit: int) -> str:
    """The most confidently wrong test examples (text, true, predicted, confidence) as CSV."""
    import pandas as pd

    predicted = probabilities.argmax(-1)
    wrong = pd.DataFrame(
        {
            "text": test["text"].str.slice(0, 500),
            "true": [labels[i] for i in test["label"]],
            "predicted": [labels[i] for i in predicted],
            "confidence": probabilities.max(-1).round(4),
        }
    )[predicted != test["label"].to_numpy()]
    return wrong.sort_values("confidence", ascending=False).head(limit).to_csv(index=False)


def predictions_csv(y_true, y_pred, baseline_pred=None) -> str:
    """One row per test article, in test-split order: the true label id, the model's predicted id
    and (evaluate.baseline) the baseline's: the paired data `transferlab report` tests on."""
    import pandas as pd

    columns = {"label": y_true, "predicted": y_pred}
    if baseline_pred is not None:
        columns["baseline"] = baseline_pred
    return pd.DataFrame(columns).to_csv(index=False)


def draw_confusion(path: Path, y_true, y_pred, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(labels))), display_labels=labels, ax=ax, colorbar=False
    )
    ax.set_title("Test confusion matrix")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg) -> dict:
    from transferlab.models.build import register_architectures
    from transferlab.outputs import staged_outputs
    from transferlab.tasks.classification.baseline import tfidf_logistic_regression
    from transferlab.tasks.classification.serving import class_probabilities
    from transferlab.tracking import stage_run
    from transferlab.tracking.card import registry_description
    from transferlab.tracking.registry import publish
    from transferlab.training.runtime import resolve_device

    digest = prepared.files_digest([prepared.split_path("test")])
    with stage_run("evaluate", cfg, tags={"data.digest": digest}) as run_log:
        device = resolve_device(cfg.device)
        run_log.set_tags({"device": device})
        if not (FINETUNED / "config.json").is_file():
            raise UserError(f"{FINETUNED} has no model: run the finetune stage first")
        check_positions(FINETUNED, cfg.model.max_length)  # by hand, after a max_length change
        run_log.link("finetune")
        labels = prepared.read_labels()
        test = prepared.read_split("test")
        prepared.log_splits(run_log, {"test": test})
        # Imported once the run is open, so the run's start time marks the end of start-up.
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        register_architectures()
        trust = cfg.model.trust_remote_code
        net = AutoModelForSequenceClassification.from_pretrained(FINETUNED, trust_remote_code=trust)
        tok = AutoTokenizer.from_pretrained(FINETUNED, trust_remote_code=trust)
        model = cfg.model
        probabilities = class_probabilities(
            net,
            tok,
            test["text"].tolist(),
            model.max_length,
            cfg.evaluate.batch_size,
            device,
            model.truncation,
            model.window_stride,
            model.max_windows,
        )
        y_true, y_pred = test["label"].to_numpy(), probabilities.argmax(-1)
        metrics = scores(y_true, y_pred, labels)
        baseline_pred = None
        if cfg.evaluate.baseline:
            train = prepared.read_split("train")
            baseline_pred, fit_seconds = tfidf_logistic_regression(
                train["text"], train["label"], test["text"], cfg.seed
            )
            baseline = scores(y_true, baseline_pred, labels)
            # Wall time goes to MLflow only: metrics/evaluate.json must be identical on a rerun.
            metrics["baseline_tfidf_logreg"] = {
                "accuracy": baseline["accuracy"],
                "macro_f1": baseline["macro_f1"],
            }
            run_log.log_metrics({"baseline_test_fit_seconds": fit_seconds})
            log.info("baseline TF-IDF + logistic regression: accuracy %.4f", baseline["accuracy"])
        history = json.loads((FINETUNED / TRAINING_LOG).read_text())

        with staged_outputs() as outs:
            # The headline scores are DVC metrics (one column each in `dvc exp show`); the
            # per-class scores go with the reports.
            headline = {k: v for k, v in metrics.items() if k != "per_class"}
            outs.path(METRICS).write_text(json.dumps(headline, indent=2) + "\n")
            plots = outs.path(PLOTS, is_dir=True)
            pairs = [
                {"actual": labels[t], "predicted": labels[p]} for t, p in zip(y_true, y_pred, strict=True)
            ]
            write_csv(plots / CONFUSION_CSV, pairs, ["actual", "predicted"])
            draw_confusion(plots / CONFUSION_PNG, y_true, y_pred, labels)
            write_learning_curves(plots, history)
            reports = outs.path(REPORTS, is_dir=True)
            (reports / PER_CLASS).write_text(json.dumps(metrics["per_class"], indent=2) + "\n")
            (reports / "classification_report.txt").write_text(
                classification_report_text(y_true, y_pred, labels)
            )
            (reports / "misclassified.csv").write_text(
                misclassified(test, probabilities, labels, cfg.evaluate.misclassified_samples)
            )
            (reports / PREDICTIONS).write_text(predictions_csv(y_true, y_pred, baseline_pred))

        run_log.log_metrics({"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]})
        if "baseline_tfidf_logreg" in metrics:
            run_log.log_metrics(
                {f"baseline_test_{k}": v for k, v in metrics["baseline_tfidf_logreg"].items()}
            )
        for artifact in (
            METRICS,
            PLOTS / CONFUSION_PNG,
            PLOTS / CURVE_PNG,
            PLOTS / CONFUSION_CSV,
            REPORTS / PER_CLASS,
            REPORTS / "classification_report.txt",
            REPORTS / "misclassified.csv",
            REPORTS / PREDICTIONS,
        ):
            run_log.log_artifact(artifact)
        run_log.set_tags({"test.digest": digest})
        results = [
            ("accuracy", metrics["accuracy"]),
            ("macro-F1", metrics["macro_f1"]),
            ("examples", metrics["test_examples"]),
        ]
        if "baseline_tfidf_logreg" in metrics:
            results.append(
                (
                    "TF-IDF + logistic regression accuracy (baseline)",
                    metrics["baseline_tfidf_logreg"]["accuracy"],
                )
            )
        publish(
            run_log,
            cfg,
            FINETUNED,
            test["text"].head(2).tolist(),
            metrics["accuracy"],
            digest,
            description=registry_description(FINETUNED, results),
        )
    log.info("test accuracy %.4f, macro-F1 %.4f", metrics["accuracy"], metrics["macro_f1"])
    return metrics
