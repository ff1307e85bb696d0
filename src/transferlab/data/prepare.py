"""Stage `prepare`: raw labelled texts -> deduplicated, stratified train/validation/test splits."""

from __future__ import annotations

import json
import logging

from transferlab.data import prepared, sources
from transferlab.errors import UserError

log = logging.getLogger(__name__)
STATS = "metrics/data.json"


def clean(frame):
    """Drop empty texts and exact duplicates (same text twice would leak across splits)."""
    frame = frame[frame["text"].str.len() > 0]
    before = len(frame)
    frame = frame.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return frame, before - len(frame)


def cap_per_label(frame, cap: int | None, seed: int):
    if cap is None:
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=False).head(cap).reset_index(drop=True)


def split(frame, validation_fraction: float, test_fraction: float, seed: int, where: str):
    """Per-label shuffled split: every label lands in every split, in proportion."""
    import numpy as np
    import pandas as pd

    counts = frame["label"].value_counts()
    too_small = counts[counts < 3]
    if not too_small.empty:
        listing = ", ".join(f"{label!r} ({n})" for label, n in too_small.items())
        raise UserError(
            f"{where}: labels with fewer than 3 examples: {listing}. Every label needs one example "
            "each for train, validation and test: add examples or remove the label"
        )
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in prepared.SPLITS}
    for _, group in frame.groupby("label", sort=True):
        group = group.iloc[rng.permutation(len(group))]
        n_val = max(1, round(len(group) * validation_fraction))
        n_test = max(1, round(len(group) * test_fraction))
        n_val, n_test = min(n_val, len(group) - 2), min(n_test, len(group) - 2)
        parts["validation"].append(group.iloc[:n_val])
        parts["test"].append(group.iloc[n_val:n_val + n_test])
        parts["train"].append(group.iloc[n_val + n_test:])
    return {name: pd.concat(chunks).sample(frac=1.0, random_state=seed).reset_index(drop=True)
            for name, chunks in parts.items()}


def statistics(splits: dict, duplicates: int) -> dict:
    stats = {"duplicates_dropped": duplicates}
    for name, frame in splits.items():
        lengths = frame["text"].str.len()
        stats[name] = {
            "examples": len(frame),
            "per_label": {k: int(v) for k, v in frame["label"].value_counts().sort_index().items()},
            "chars_mean": round(float(lengths.mean()), 1),
            "chars_max": int(lengths.max()),
        }
    return stats


def run(cfg) -> dict:
    from transferlab.outputs import staged_outputs
    from transferlab.tracking import stage_run

    where = "data.path " + cfg.data.path if cfg.data.source == "files" else "data=bbc_news"
    with stage_run("prepare", cfg) as run_log:
        frame = sources.load(cfg.data)
        if frame.empty:
            raise UserError(f"{where}: no rows with both text and label")
        frame, duplicates = clean(frame)
        frame = cap_per_label(frame, cfg.data.max_per_label, cfg.seed)
        splits = split(frame, cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed, where)
        labels = sorted(frame["label"].unique())
        stats = statistics(splits, duplicates)
        log.info("prepared %s examples in %d labels (%d duplicates dropped)",
                 {k: len(v) for k, v in splits.items()}, len(labels), duplicates)

        with staged_outputs() as outs:
            folder = outs.path(prepared.PREPARED, is_dir=True)
            label_ids = {name: i for i, name in enumerate(labels)}
            for name, part in splits.items():
                part.assign(label=part["label"].map(label_ids)).to_parquet(
                    folder / f"{name}.parquet", index=False)
            (folder / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
            outs.path(STATS).write_text(json.dumps(stats, indent=2) + "\n")

        digest = prepared.files_digest(prepared.split_path(s) for s in prepared.SPLITS)
        run_log.set_tags({"data.digest": digest})
        run_log.log_metrics({f"{name}_examples": len(part) for name, part in splits.items()})
        run_log.log_metrics({"duplicates_dropped": duplicates, "labels": len(labels)})
        run_log.log_artifact(STATS)
        run_log.log_artifact(prepared.labels_path())
    return stats
