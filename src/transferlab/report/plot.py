"""The comparison as a picture: test accuracy, mean ± sd per experiment, against the baseline, on an
axis that shows the differences."""

from __future__ import annotations

from pathlib import Path

from transferlab.report.significance import mean_sd


def accuracy_axis(lowest: float) -> tuple[float, float]:
    """An axis that shows the differences: from a little below the lowest mean − sd (not from 0,
    where 0.95 and 0.97 look the same) to just above 1.0."""
    span = max(1.0 - lowest, 0.01)
    return max(0.0, lowest - 0.15 * span), 1.0 + 0.02 * span


def error_bar_plot(path: Path, rows: list[dict], baselines: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = [row["accuracy"][0] for row in rows]
    sds = [row["accuracy"][1] or 0.0 for row in rows]
    lows = [m - s for m, s in zip(means, sds, strict=True)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 5.5))
    x = list(range(len(rows)))
    ax.errorbar(
        x,
        means,
        yerr=sds,
        fmt="o",
        capsize=5,
        color="tab:blue",
        clip_on=False,
        label="experiment: mean ± sd over seeds",
    )
    for i, row in enumerate(rows):
        ax.annotate(
            f"{means[i]:.3f} (n={len(row['seeds'])})",
            (i, means[i]),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    if baselines:
        mean, sd = mean_sd(s["accuracy"] for s in baselines.values())
        ax.axhline(
            mean,
            color="tab:gray",
            linestyle="--",
            label=f"TF-IDF baseline: {mean:.3f}" + (f" ± {sd:.3f}" if sd else ""),
        )
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
