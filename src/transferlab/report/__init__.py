"""`transferlab report`: the transfer-learning comparison as a table and a plot, built from the
finished MLflow runs of the comparison experiments (nothing is re-run).

Each experiment config is composed once per seed (`experiment=<name> seed=<s>`; without --seeds,
the config's own seed), its stage fingerprints computed, and the latest finished train / finetune /
evaluate runs with those fingerprints looked up; a run that DVC restored from its cache still
counts, since its fingerprint is the same. Scores are mean ± sd over the seeds found. Against the
TF-IDF baseline, each evaluate run's predictions.csv pairs both predictions on the same test
articles: exact McNemar test per seed, paired bootstrap CI of the accuracy difference.

collect.py gathers the runs, table.py and plot.py draw the comparison, pretraining_budget.py the
accuracy-against-pretraining-steps finding, significance.py holds the statistics.
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


def check(experiments, config_dir="conf", seeds=None) -> None:
    """Every experiment composes with every seed, passes the stages' checks and is a classifier."""
    from transferlab.report.collect import compared_config, seed_list

    for name in experiments:
        for seed in seed_list(seeds):
            compared_config(name, seed, config_dir)


def run(experiments=DEFAULT_EXPERIMENTS, config_dir="conf", output=REPORTS, seeds=None) -> list[dict]:
    from transferlab.outputs import staged_outputs
    from transferlab.report import pretraining_budget
    from transferlab.report.collect import collect
    from transferlab.report.plot import error_bar_plot
    from transferlab.report.table import markdown

    rows, baselines = collect(experiments, config_dir, seeds)
    if not rows:
        raise UserError(
            "no finished comparison runs in MLflow yet: run `make compare` first (after it, "
            "`dvc queue status` and `dvc queue logs NAME` show the experiments that failed)"
        )
    curves = pretraining_budget.curves(rows)
    with staged_outputs() as outs:
        outs.path(Path(output) / "comparison.md").write_text(
            "# Transfer learning comparison\n\n"
            + markdown(rows, baselines)
            + ("\n" + pretraining_budget.markdown(curves) if curves else "")
        )
        error_bar_plot(outs.path(Path(output) / "comparison.png"), rows, baselines)
        if curves:
            pretraining_budget.plot(outs.path(Path(output) / "pretraining_budget.png"), curves)
    log.info("wrote %s/comparison.md and comparison.png (%d experiments)", output, len(rows))
    return rows
