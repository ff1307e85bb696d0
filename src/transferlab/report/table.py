"""The comparison as Markdown: one row per experiment, the baseline, the per-seed paired tests and
how to read them."""

from __future__ import annotations

from transferlab.report.significance import RESAMPLES, mean_sd, mean_sd_cell, signed_text

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


def seeds_cell(seeds: list, missing: list = ()) -> str:
    text = f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})"
    return text + (f"; not run: {', '.join(map(str, missing))}" if missing else "")


def interval(ci) -> str:
    return f"[{signed_text(ci[0])}, {signed_text(ci[1])}]" if ci else ""


def validation_cell(row: dict) -> str:
    if not row["validation"]:
        return "-"
    return mean_sd_cell(row["validation"]) + (" (per window)" if row["validation_per_window"] else "")


def markdown(rows: list[dict], baselines: dict) -> str:
    columns = [
        "experiment",
        "model",
        "init",
        "pretraining steps",
        "fine-tune technique",
        "seeds",
        "validation accuracy",
        "test accuracy",
        "test macro-F1",
        "Δ accuracy vs baseline [95% CI]",
        "McNemar p vs baseline (per seed)",
        "train time (s)",
        "parameters",
    ]

    def line(cells) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    lines = [line(columns), "|" + "---|" * len(columns)]
    for row in rows:
        delta = "-" if row["delta"] is None else f"{signed_text(row['delta'])} {interval(row['ci'])}".strip()
        p_values = ", ".join(f"{r['p']:.3g}" for r in row["per_seed"] if "p" in r) or "-"
        parameters = "" if row["parameters"] is None else f"{row['parameters']:,.0f}"
        lines.append(
            line(
                [
                    row["experiment"],
                    row["model"],
                    row["init"],
                    row["pretraining steps"],
                    row["fine-tune technique"],
                    seeds_cell(row["seeds"], row["missing"]),
                    validation_cell(row),
                    mean_sd_cell(row["accuracy"]),
                    mean_sd_cell(row["macro_f1"]),
                    delta,
                    p_values,
                    f"{row['seconds']:,.0f}",
                    parameters,
                ]
            )
        )
    if baselines:
        scores = list(baselines.values())
        lines.append(
            line(
                [
                    "baseline",
                    "TF-IDF + logistic regression",
                    "-",
                    "-",
                    "-",
                    seeds_cell(list(baselines)),
                    "-",
                    mean_sd_cell(mean_sd(s["accuracy"] for s in scores)),
                    mean_sd_cell(mean_sd(s["macro_f1"] for s in scores)),
                    "-",
                    "-",
                    f"{mean_sd(s['seconds'] for s in scores)[0]:,.0f}",
                    "-",
                ]
            )
        )
    detail = [
        "experiment",
        "seed",
        "test accuracy",
        "baseline accuracy",
        "Δ",
        "b (only the model right)",
        "c (only the baseline right)",
        "McNemar p",
        "paired bootstrap 95% CI of Δ",
    ]
    lines += [
        "",
        "## Per seed: each experiment against the baseline on the same test articles",
        "",
        line(detail),
        "|" + "---|" * len(detail),
    ]
    for row in rows:
        for r in row["per_seed"]:
            baseline = "-" if r["baseline"] is None else f"{r['baseline']:.4f}"
            delta = "-" if r["baseline"] is None else signed_text(r["accuracy"] - r["baseline"])
            tests = (
                [r["b"], r["c"], f"{r['p']:.3g}", interval(r["ci"])]
                if "p" in r
                else ["-", "-", "- (no predictions.csv with a baseline)", "-"]
            )
            accuracy = f"{r['accuracy']:.4f}"
            lines.append(line([row["experiment"], r["seed"], accuracy, baseline, delta, *tests]))
    return "\n".join(lines) + "\n" + HOW_TO_READ
