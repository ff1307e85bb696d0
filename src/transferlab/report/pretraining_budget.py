"""The pretraining-budget finding of the comparison report: accuracy against pretraining steps.

Rows of the comparison that share a model, its initialisation and the fine-tuning technique and
differ only in masked-LM steps (scratch BERT: 0, 400, 1,600 ...; MiniLM: 0 and DAPT's 150) form a
curve. Each budget is compared with 0 steps seed by seed (the same split and fine-tuning), and the
finding says from which budget pretraining helps: the first from which, at every budget measured,
every common seed scores higher than without pretraining.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.report.significance import mean_sd, mean_sd_cell


def curves(rows: list[dict]) -> list[dict]:
    """One curve per (model, init, technique) with a 0-step row and at least one other budget."""
    groups: dict[tuple, dict[int, dict]] = {}
    for row in rows:
        key = (row["model"], row["init"], row["fine-tune technique"])
        groups.setdefault(key, {})[row["pretraining steps"]] = row
    found = []
    for (model, init, technique), by_steps in groups.items():
        if 0 not in by_steps or len(by_steps) < 2:
            continue
        floor = {r["seed"]: r["accuracy"] for r in by_steps[0]["per_seed"]}
        points = []
        for steps in sorted(by_steps):
            row = by_steps[steps]
            gains = [r["accuracy"] - floor[r["seed"]] for r in row["per_seed"] if r["seed"] in floor]
            points.append(
                {
                    "steps": steps,
                    "experiment": row["experiment"],
                    "accuracy": row["accuracy"],
                    "seeds": row["seeds"],
                    "gains": gains,
                }
            )
        found.append(
            {
                "model": model,
                "init": init,
                "technique": technique,
                "points": points,
                "helps_from": helps_from(points),
            }
        )
    return found


def helps_from(points: list[dict]) -> int | None:
    """The smallest budget from which every budget's every seed beats 0 steps; None if none does."""
    start = None
    for point in points[1:]:
        if point["gains"] and all(gain > 0 for gain in point["gains"]):
            start = point["steps"] if start is None else start
        else:
            start = None
    return start


def markdown(found: list[dict]) -> str:
    lines = [
        "## Pretraining budget: test accuracy against masked-LM steps",
        "",
        "Δ is each seed's accuracy minus the same seed's run without pretraining (same split, same "
        "fine-tuning), mean ± sd over the common seeds.",
        "",
    ]
    for curve in found:
        lines += [
            f"**{curve['model']} ({curve['init']}, {curve['technique']})**: " + finding(curve),
            "",
            "| pretraining steps | experiment | seeds | test accuracy | Δ vs 0 steps | seeds better |",
            "|---|---|---|---|---|---|",
        ]
        for point in curve["points"]:
            gains = point["gains"]
            if point["steps"] == 0 or not gains:
                delta, better = "-", "-"
            else:
                delta = mean_sd_cell(mean_sd(gains), signed=True)
                better = f"{sum(g > 0 for g in gains)} of {len(gains)}"
            lines.append(
                f"| {point['steps']:,} | {point['experiment']} | {len(point['seeds'])} | "
                f"{mean_sd_cell(point['accuracy'])} | {delta} | {better} |"
            )
        lines.append("")
    return "\n".join(lines)


def finding(curve: dict) -> str:
    largest = curve["points"][-1]["steps"]
    if curve["helps_from"] is None:
        return f"no budget measured (up to {largest:,} steps) helps on every seed."
    helping = [p for p in curve["points"] if p["steps"] >= curve["helps_from"]]
    seeds = min(len(p["gains"]) for p in helping)
    return (
        f"pretraining helps from {curve['helps_from']:,} steps on: at every budget from there up to "
        f"{largest:,}, every seed ({seeds} or more) scored above its run without pretraining"
        + (" (one seed: no more than a hint)." if seeds == 1 else ".")
    )


def plot(path: Path, found: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(found), figsize=(5.0 * len(found), 4.2), squeeze=False)
    for ax, curve in zip(axes[0], found, strict=True):
        steps = [p["steps"] for p in curve["points"]]
        means = [p["accuracy"][0] for p in curve["points"]]
        sds = [p["accuracy"][1] or 0.0 for p in curve["points"]]
        ax.errorbar(steps, means, yerr=sds, fmt="o-", capsize=5)
        for x, mean, point in zip(steps, means, curve["points"], strict=True):
            ax.annotate(
                f"{mean:.3f} (n={len(point['seeds'])})",
                (x, mean),
                xytext=(5, -12),
                textcoords="offset points",
                fontsize=8,
            )
        ax.set_xscale("symlog", linthresh=max(1, min(s for s in steps if s > 0)))
        ax.set_xlabel("masked-LM pretraining steps")
        ax.set_ylabel("test accuracy, mean ± sd over seeds")
        ax.set_title(f"{curve['model']} ({curve['init']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
