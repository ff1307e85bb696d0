"""How sure a comparison is: mean and sample standard deviation over seeds, and two paired tests of
a model against a baseline on the same test articles (their per-article predictions, one seed's
split each): the exact McNemar test and a paired bootstrap confidence interval of the accuracy
difference. Used by `transferlab report`."""

from __future__ import annotations

import math

RESAMPLES = 10_000  # paired bootstrap resamples (generator seed 0: the same report every time)


def mean_sd(values) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1); the sd is None for a single value."""
    import statistics

    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_sd of no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def signed_text(value: float) -> str:
    """`+0.0123`; a difference that rounds to zero is `+0.0000`, never `-0.0000` (float noise, as in
    a mean of per-seed differences that cancel out)."""
    return f"{round(value, 4) + 0.0:+.4f}"


def mean_sd_cell(value: tuple[float, float | None], signed: bool = False) -> str:
    """`mean ± sd` to 4 decimals for a table cell; the mean alone when there is no sd."""
    mean, sd = value
    text = signed_text(mean) if signed else f"{mean:.4f}"
    return text if sd is None else f"{text} ± {sd:.4f}"


def discordant(y_true, a, b) -> tuple[int, int]:
    """The McNemar counts of predictions `a` against `b` on the same articles: (articles only `a`
    got right, articles only `b` got right)."""
    import numpy as np

    y_true, a, b = np.asarray(y_true), np.asarray(a), np.asarray(b)
    if not len(y_true) == len(a) == len(b):
        raise ValueError(f"paired predictions differ in length: {len(y_true)}, {len(a)}, {len(b)}")
    right_a, right_b = a == y_true, b == y_true
    return int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of the exact McNemar test: under "both are equally good" each of the
    b + c discordant articles is a fair coin, so min(b, c) is Binomial(b + c, 1/2). Exact integer
    arithmetic; equal to scipy.stats.binomtest(b, b + c, 0.5).pvalue (the distribution is
    symmetric, so both tails are twice the smaller one)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def bootstrap_difference_ci(
    pairs, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """A percentile bootstrap confidence interval of the accuracy difference (a minus b).

    `pairs`: one (correct_a, correct_b) pair of boolean arrays per seed, over that seed's test
    articles. Each resample draws the articles of every seed with replacement, keeping each
    article's two predictions together (paired), and takes the mean over seeds of the per-seed
    difference; with one seed this is the ordinary paired bootstrap."""
    import numpy as np

    pairs = list(pairs)
    if not pairs:
        raise ValueError("bootstrap of no seeds")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for correct_a, correct_b in pairs:
        diff = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
        if diff.size == 0:
            raise ValueError("no test articles to resample")
        for start in range(0, resamples, 1000):  # 1,000 resamples at a time: bounded memory
            rows = min(1000, resamples - start)
            total[start : start + rows] += diff[rng.integers(0, diff.size, (rows, diff.size))].mean(1)
    means = total / len(pairs)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
