"""The comparison's statistics (mean ± sd over seeds, exact McNemar, paired bootstrap) against
values worked out by hand, and `transferlab report --seeds` over evaluate runs in a real sqlite
MLflow store (no pipeline is run: the runs are logged as the evaluate stage logs them)."""

from __future__ import annotations

import math
import shutil

import pytest

from conftest import REPO, make_config
from transferlab.report.significance import (
    bootstrap_difference_ci,
    discordant,
    mcnemar_exact,
    mean_sd,
    mean_sd_cell,
    signed_text,
)


def test_mean_and_sample_sd_over_seeds():
    mean, sd = mean_sd([0.90, 0.92, 0.97])
    # deviations -0.03, -0.01, +0.04: squares 0.0026 over n - 1 = 2
    assert mean == pytest.approx(0.93) and sd == pytest.approx(math.sqrt(0.0013))
    assert mean_sd([0.5]) == (0.5, None), "one seed: no spread to report"


def test_a_difference_that_cancels_out_prints_as_zero_not_minus_zero():
    # three seeds' Δ of -1, -2 and +3 articles in 318: float noise of about -1e-17, not a loss
    deltas = [-1 / 318, -2 / 318, 3 / 318]
    assert sum(deltas) / 3 != 0.0
    assert signed_text(sum(deltas) / 3) == "+0.0000"
    assert mean_sd_cell(mean_sd(deltas), signed=True).startswith("+0.0000 ± ")
    assert signed_text(-0.0031) == "-0.0031" and signed_text(0.00312) == "+0.0031"


def test_exact_mcnemar_by_hand():
    # b = 7, c = 1: P(X <= 1) for X ~ Binomial(8, 1/2) is (1 + 8) / 256, twice that two-sided
    assert mcnemar_exact(7, 1) == 18 / 256 == 0.0703125
    assert mcnemar_exact(1, 7) == 0.0703125
    assert mcnemar_exact(5, 0) == 2 / 32
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(7, 1), (12, 4), (0, 9), (30, 18), (2, 3)]:
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    # only-A-right and only-B-right articles; articles both got right or wrong do not count
    assert discordant([0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 0, 1], [0, 0, 0, 3, 4, 1]) == (2, 2)
    assert discordant([0, 1, 2, 3], [0, 1, 2, 3], [1, 1, 0, 3]) == (2, 0)


def test_paired_bootstrap_interval_of_the_accuracy_difference():
    right = [True] * 100
    # 10 articles only the model gets right: difference 0.1, bootstrap sd about sqrt(0.1 * 0.9 / 100) = 0.03
    low, high = bootstrap_difference_ci([(right, [False] * 10 + [True] * 90)])
    assert 0.03 < low < 0.07 and 0.13 < high < 0.17
    assert bootstrap_difference_ci([(right, [False] * 10 + [True] * 90)]) == (low, high), "fixed seed"
    assert bootstrap_difference_ci([(right, right)]) == (0.0, 0.0)
    # two seeds: the model beats the baseline on every article of one, ties on the other: every
    # resample's mean over the seeds is (1 + 0) / 2
    assert bootstrap_difference_ci([([True] * 5, [False] * 5), ([True] * 7, [True] * 7)]) == (0.5, 0.5)


# Per seed, 20 test articles: (both right, only the model right = b, only the baseline right = c);
# the rest both wrong. Experiment "tiny" ran seeds 1-3, "compare_pretrained/frozen_backbone" 1-2.
OUTCOMES = {
    "tiny": {1: (10, 7, 1), 2: (12, 3, 3), 3: (13, 5, 0)},
    "compare_pretrained/frozen_backbone": {1: (16, 2, 0), 2: (14, 0, 1)},
}


def predictions(both: int, b: int, c: int, n: int = 20):
    """Labels and the model's and baseline's predicted ids with these paired outcomes."""
    labels = [i % 5 for i in range(n)]
    wrong = [(label + 1) % 5 for label in labels]
    model = labels[: both + b] + wrong[both + b : both + b + c] + wrong[both + b + c :]
    baseline = (
        labels[:both] + wrong[both : both + b] + labels[both + b : both + b + c] + wrong[both + b + c :]
    )
    return labels, model, baseline


def log_evaluate_runs(workdir, outcomes=OUTCOMES) -> None:
    """Evaluate runs as the stage logs them: its MLflow run (tags, fingerprint), its metrics and
    its predictions.csv (the stage's own writer)."""
    from transferlab.tasks.classification.evaluate import PREDICTIONS, predictions_csv, scores
    from transferlab.tracking import stage_run

    path = workdir / "reports" / "evaluate" / PREDICTIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["business", "entertainment", "politics", "sports", "tech"]
    for experiment, seeds in outcomes.items():
        for seed, outcome in seeds.items():
            labels, model, baseline = predictions(*outcome)
            with stage_run("evaluate", make_config(f"experiment={experiment}", f"seed={seed}")) as run:
                path.write_text(predictions_csv(labels, model, baseline))
                run.log_artifact(path)
                ours, theirs = scores(labels, model, names), scores(labels, baseline, names)
                run.log_metrics(
                    {
                        "test_accuracy": ours["accuracy"],
                        "test_macro_f1": ours["macro_f1"],
                        "baseline_test_accuracy": theirs["accuracy"],
                        "baseline_test_macro_f1": theirs["macro_f1"],
                        "baseline_test_fit_seconds": 2,
                    }
                )


def test_the_validation_of_window_experiments_says_it_counts_windows():
    from transferlab.report.collect import summary
    from transferlab.report.table import markdown

    seed = {
        "seed": 1,
        "accuracy": 0.97,
        "macro_f1": 0.97,
        "baseline": None,
        "validation": 0.94,
        "seconds": 1.0,
        "parameters": 10,
        "paired": None,
    }
    table = markdown(
        [
            summary(name, make_config(f"experiment={name}"), [seed], [])
            for name in ("long_documents/windows", "long_documents/head_tail")
        ],
        {},
    )
    summary_table = table.split("## Per seed")[0]  # each row once; the per-seed table repeats names
    rows = {
        line.split(" | ")[0].removeprefix("| "): line
        for line in summary_table.splitlines()
        if line.startswith("| ")
    }
    assert "| 0.9400 (per window) |" in rows["long_documents/windows"]
    assert "| 0.9400 |" in rows["long_documents/head_tail"], "one article, one example: no note"


def test_the_technique_column_says_what_is_frozen():
    from transferlab.report.collect import technique

    assert technique(make_config()) == "embeddings + lowest 2 layers frozen", "MiniLM's default"
    spelt_out = make_config("experiment=compare_pretrained/frozen_lower_layers")
    assert technique(spelt_out) == technique(make_config())
    assert technique(make_config("experiment=compare_pretrained/full_finetune")) == "full fine-tune"
    assert technique(make_config("experiment=compare_pretrained/frozen_backbone")) == "frozen backbone"
    assert technique(make_config("finetune.freeze.embeddings=false", "finetune.freeze.layers=1")) == (
        "lowest 1 layer frozen"
    )
    assert technique(make_config("experiment=tiny")) == "full fine-tune", "a scratch model freezes nothing"


def report(experiments, out, seeds: list[int]) -> str:
    """`transferlab report` through the CLI; returns the comparison.md it wrote."""
    from transferlab.cli import main

    conf = ["--config-dir", str(REPO / "conf")]
    assert main(["report", *experiments, *conf, "--output", str(out), "--seeds", *map(str, seeds)]) == 0
    return (out / "comparison.md").read_text()


def test_report_over_seeds_from_a_real_store(workdir, monkeypatch):
    from transferlab.report.plot import accuracy_axis

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    shutil.copy(REPO / "dvc.yaml", workdir)  # the stages' params keys: what a fingerprint covers
    log_evaluate_runs(workdir)
    out = workdir / "out"
    experiments = ["tiny", "compare_pretrained/frozen_backbone"]
    table = report(experiments, out, [1, 2, 3])
    rows = {}  # the summary table's rows by their first cell (the per-seed table comes after it)
    for line in table.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].removeprefix("| "), line)
    tiny = rows["tiny"]
    # accuracy 0.85, 0.75, 0.90: mean 0.8333, sd sqrt(0.011667 / 2); baseline 0.55, 0.75, 0.65
    assert "| 3 seeds (1, 2, 3) |" in tiny and "| 0.8333 ± 0.0764 |" in tiny
    assert "| +0.1833 [+0." in tiny, "mean Δ (0.30 + 0.00 + 0.25) / 3 and its interval"
    assert "| 0.0703, 1, 0.0625 |" in tiny, "McNemar p per seed: b/c = 7/1, 3/3, 5/0"
    assert "| 2 seeds (1, 2); not run: 3 |" in rows["compare_pretrained/frozen_backbone"]
    baseline = rows["baseline"]
    assert "TF-IDF + logistic regression" in baseline and "| 0.6500 ± 0.1000 |" in baseline
    per_seed = [line for line in table.splitlines() if line.startswith("| tiny | 1 |")]
    assert len(per_seed) == 1 and "| 0.8500 | 0.5500 | +0.3000 | 7 | 1 | 0.0703 | [+0." in per_seed[0]
    assert "split (stage prepare)" in table and "10,000" in table
    assert (out / "comparison.png").stat().st_size > 1000
    assert 0.7 < accuracy_axis(0.8333 - 0.0764)[0] < 0.757, "the axis starts just below the lowest mean - sd"

    table = report(["tiny"], out, [2])
    one = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert "| 1 seed (2) |" in one and "| 0.7500 |" in one and "±" not in one


# Scratch BERT without pretraining, after 400 and after 1,600 masked-LM steps; test accuracy
# (both + b) / 20 per seed: 0.50 / 0.55, then 0.55 / 0.50 (one seed worse), then 0.60 / 0.65.
BUDGETS = {
    "compare_scratch/no_pretraining": {1: (8, 2, 0), 2: (9, 2, 0)},
    "compare_scratch/mlm_pretraining": {1: (9, 2, 0), 2: (8, 2, 0)},
    "pretraining_budget/steps_1600": {1: (10, 2, 0), 2: (11, 2, 0)},
}


def test_report_finds_from_which_pretraining_budget_every_seed_gains(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    shutil.copy(REPO / "dvc.yaml", workdir)
    log_evaluate_runs(workdir, BUDGETS)
    out = workdir / "out"
    table = report(BUDGETS, out, [1, 2])
    curve = table[table.index("## Pretraining budget") :]
    assert (
        "pretraining helps from 1,600 steps on: at every budget from there up to 1,600, every seed "
        "(2 or more)" in curve
    ), "400 steps: one of two seeds is worse"
    rows = [line for line in curve.splitlines() if line.startswith("| ") and "steps |" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 400", "| 1,600"]
    assert "| +0.0000 ± 0.0707 | 1 of 2 |" in rows[1]  # +0.05 and -0.05
    assert "| +0.1000 ± 0.0000 | 2 of 2 |" in rows[2]
    assert (out / "pretraining_budget.png").stat().st_size > 1000

    # one budget alone is no curve: no section, no plot
    alone = workdir / "alone"
    assert "Pretraining budget" not in report(["compare_scratch/mlm_pretraining"], alone, [1, 2])
    assert not (alone / "pretraining_budget.png").exists()


@pytest.mark.parametrize("store", ["a closed port", "a corrupt sqlite file"])
def test_report_on_a_store_it_cannot_read_ends_in_one_line(workdir, store):
    """Through `open_store`'s check, not MLflow's 7 retries over 4 minutes and a traceback."""
    import subprocess

    from conftest import free_port, tool_env

    if store == "a closed port":
        uri = f"http://127.0.0.1:{free_port()}"
    else:
        (workdir / "bad.db").write_bytes(bytes(range(256)) * 20)
        uri = f"sqlite:///{workdir}/bad.db"
    result = subprocess.run(
        ["transferlab", "report", "tiny"],
        cwd=REPO,
        env=tool_env(MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr[-2000:]
    assert result.stderr.startswith("transferlab report: error: ") and uri in result.stderr
