"""The fine-tuning learning curves that `evaluate` writes for every task, from Trainer's log:
plots/loss_train.csv, plots/loss_validation.csv, plots/learning_rate.csv and (classification)
plots/accuracy_validation.csv, drawn by `dvc plots show`, and all of them in plots/learning_curve.png."""

from __future__ import annotations

import csv
from pathlib import Path

LOSS_TRAIN_CSV = "loss_train.csv"
LOSS_VALIDATION_CSV = "loss_validation.csv"
ACCURACY_CSV = "accuracy_validation.csv"
LEARNING_RATE_CSV = "learning_rate.csv"
CURVE_PNG = "learning_curve.png"


def curves(history: list[dict]) -> dict[str, list[dict]]:
    """Trainer's log history as rows per curve (an empty list where the log has no such value)."""

    def rows(key: str, x: str, y: str) -> list[dict]:
        return [{x: e[x], y: e[key]} for e in history if key in e]

    return {
        "train": rows("loss", "step", "loss"),
        "validation": rows("eval_loss", "step", "loss"),
        "accuracy": rows("eval_accuracy", "epoch", "accuracy"),
        "learning_rate": rows("learning_rate", "step", "learning_rate"),
    }


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def draw_curves(path: Path, curve: dict[str, list[dict]]) -> None:
    """Loss, validation accuracy (when there is one) and learning rate, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("loss", "accuracy", "learning_rate") if p == "loss" or curve[p]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "loss":
            ax.plot(*_xy(curve["train"], "step", "loss"), label="train")
            ax.plot(*_xy(curve["validation"], "step", "loss"), "o-", label="validation")
            ax.set(xlabel="step", ylabel="loss", title="Loss")
            ax.legend()
        elif panel == "accuracy":
            ax.plot(*_xy(curve["accuracy"], "epoch", "accuracy"), "o-", color="tab:green")
            ax.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
        else:
            ax.plot(*_xy(curve["learning_rate"], "step", "learning_rate"), color="tab:purple")
            ax.set(xlabel="step", ylabel="learning rate (first group)", title="Learning-rate schedule")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.suptitle("Fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _xy(rows: list[dict], x: str, y: str) -> tuple[list, list]:
    return [r[x] for r in rows], [r[y] for r in rows]


def write_learning_curves(folder: Path, history: list[dict]) -> None:
    """The CSVs DVC draws and the PNG, from the fine-tuning log (every task)."""
    curve = curves(history)
    write_csv(folder / LOSS_TRAIN_CSV, curve["train"], ["step", "loss"])
    write_csv(folder / LOSS_VALIDATION_CSV, curve["validation"], ["step", "loss"])
    write_csv(folder / LEARNING_RATE_CSV, curve["learning_rate"], ["step", "learning_rate"])
    if curve["accuracy"]:
        write_csv(folder / ACCURACY_CSV, curve["accuracy"], ["epoch", "accuracy"])
    draw_curves(folder / CURVE_PNG, curve)
