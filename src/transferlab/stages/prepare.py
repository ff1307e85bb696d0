"""Stage `prepare`: raw labelled texts -> deduplicated, stratified train/validation/test splits."""

from __future__ import annotations

import json
import logging

from transferlab.data import prepared, sources
from transferlab.errors import UserError

log = logging.getLogger(__name__)
STATS = "metrics/data.json"  # the split sizes: what `dvc exp show` lists as this stage's metrics
DETAIL = prepared.PREPARED / "stats.json"  # and the whole statistics, with the data they describe


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


def check_usable(frame, task: str, where: str, unlabelled: bool = False) -> None:
    """Refuse, in one line and before any output is touched, data the task cannot use: no text, one
    label for a classifier, a label (or, unlabelled, a corpus) too small to give each split one
    example. Whether the text fills a block of model.max_length tokens is the LM train stage's check:
    prepare has no tokenizer, and depending on model.* would rerun it for every model change."""
    if frame.empty:
        raise UserError(f"{where}: no text: every row's text is empty or blank")
    counts = frame["label"].value_counts()
    if task == "classification" and len(counts) < 2:
        ((label, n),) = counts.items()
        hint = (
            " (data.label_column is null: the texts are unlabelled)"
            if unlabelled and label == sources.UNLABELLED
            else ""
        )
        raise UserError(
            f"{where}: task=classification needs at least 2 labels; the data has one, {label!r} "
            f"({n} examples){hint}: add examples of other labels, or use task=causal_lm"
        )
    too_small = counts[counts < len(prepared.SPLITS)]
    if too_small.empty:
        return
    if task == "causal_lm" and unlabelled and list(counts.index) == [sources.UNLABELLED]:
        raise UserError(
            f"{where}: task=causal_lm needs at least 3 texts, one each for train, validation "
            f"and test; the data has {len(frame)}: add text"
        )
    shown = 10  # a text column taken for the labels makes every row a label: name a few
    listing = ", ".join(f"{str(label)[:40]!r} ({n})" for label, n in too_small.head(shown).items())
    more = f" and {len(too_small) - shown} more" if len(too_small) > shown else ""
    raise UserError(
        f"{where}: labels with fewer than 3 examples: {listing}{more}. Every label needs one example "
        "each for train, validation and test: add examples or remove the label"
    )


def split(frame, validation_fraction: float, test_fraction: float, seed: int):
    """Per-label shuffled split: every label lands in every split, in proportion (check_usable first:
    every label has at least 3 examples, so train, validation and test each get one or more)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = {name: [] for name in prepared.SPLITS}
    for _, group in frame.groupby("label", sort=True):
        group = group.iloc[rng.permutation(len(group))]
        n_val = max(1, round(len(group) * validation_fraction))
        n_test = max(1, round(len(group) * test_fraction))
        n_val = min(n_val, len(group) - 2)
        n_test = min(n_test, len(group) - 1 - n_val)  # train keeps one or more
        parts["validation"].append(group.iloc[:n_val])
        parts["test"].append(group.iloc[n_val : n_val + n_test])
        parts["train"].append(group.iloc[n_val + n_test :])
    return {
        name: pd.concat(chunks).sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for name, chunks in parts.items()
    }


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


def check_domain(frame, domain: str | None, where: str) -> None:
    """task=causal_lm trains on the texts of one label (lm.domain): a label the data has not got is
    refused here, before anything is replaced, not two stages later."""
    labels = sorted(map(str, frame["label"].unique()))
    if domain is None or domain in labels:
        return
    if labels == [sources.UNLABELLED]:
        raise UserError(
            f"{where}: lm.domain={domain!r} picks texts by label, but these are unlabelled: "
            "use lm.domain=null"
        )
    shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
    raise UserError(
        f"{where}: lm.domain={domain!r} is not a label of this data; labels: {shown} (or lm.domain=null)"
    )


def run(cfg) -> dict:
    from transferlab.outputs import staged_outputs
    from transferlab.tracking import stage_run

    where = "data.path " + cfg.data.path if cfg.data.source == "files" else "data=bbc_news"
    with stage_run("prepare", cfg) as run_log:
        if cfg.data.source == "files" and sources.outside_raw(cfg.data.path):
            log.warning(
                "data.path %s is outside %s/, which is what dvc.yaml watches: `dvc status` and "
                "`dvc repro` will not notice when it changes; keep your data in %s/",
                cfg.data.path,
                sources.RAW,
                sources.RAW,
            )
        frame = sources.load(cfg.data)
        if frame.empty:
            raise UserError(f"{where}: no rows with both text and label")
        frame, duplicates = clean(frame)
        # Before any output is staged (a refusal replaces nothing), and on the data's own counts:
        # max_per_label (>= 3) cannot make a usable label unusable.
        unlabelled = cfg.data.source == "files" and cfg.data.label_column is None
        check_usable(frame, cfg.task, where, unlabelled)
        if cfg.task == "causal_lm":
            check_domain(frame, cfg.lm.domain, where)
        frame = cap_per_label(frame, cfg.data.max_per_label, cfg.seed)
        splits = split(frame, cfg.data.validation_fraction, cfg.data.test_fraction, cfg.seed)
        labels = sorted(frame["label"].unique())
        stats = statistics(splits, duplicates)
        log.info(
            "prepared %s examples in %d labels (%d duplicates dropped)",
            {k: len(v) for k, v in splits.items()},
            len(labels),
            duplicates,
        )

        with staged_outputs() as outs:
            folder = outs.path(prepared.PREPARED, is_dir=True)
            label_ids = {name: i for i, name in enumerate(labels)}
            for name, part in splits.items():
                part.assign(label=part["label"].map(label_ids)).to_parquet(
                    folder / f"{name}.parquet", index=False
                )
            (folder / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
            (folder / DETAIL.name).write_text(json.dumps(stats, indent=2) + "\n")
            headline = {name: {"examples": stats[name]["examples"]} for name in splits}
            outs.path(STATS).write_text(json.dumps(headline, indent=2) + "\n")

        digest = prepared.files_digest(prepared.split_path(s) for s in prepared.SPLITS)
        run_log.set_tags({"data.digest": digest})
        run_log.log_metrics({f"{name}_examples": len(part) for name, part in splits.items()})
        run_log.log_metrics({"duplicates_dropped": duplicates, "labels": len(labels)})
        run_log.log_artifact(DETAIL)
        run_log.log_artifact(prepared.labels_path())
    return stats
