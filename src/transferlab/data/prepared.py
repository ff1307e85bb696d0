"""The prepared dataset on disk: paths, readers and a content digest, shared by all stages."""

from __future__ import annotations

import json
from pathlib import Path

from transferlab import hashing
from transferlab.errors import UserError

PREPARED = Path("data/prepared")
SPLITS = ("train", "validation", "test")


def split_path(split: str) -> Path:
    return PREPARED / f"{split}.parquet"


def labels_path() -> Path:
    return PREPARED / "labels.json"


def read_split(split: str):
    import pandas as pd

    path = split_path(split)
    if not path.is_file():
        raise UserError(f"{path} not found: run the prepare stage first (`dvc repro prepare`)")
    return pd.read_parquet(path)


def read_labels() -> list[str]:
    path = labels_path()
    if not path.is_file():
        raise UserError(f"{path} not found: run the prepare stage first (`dvc repro prepare`)")
    return json.loads(path.read_text())


def files_digest(paths) -> str:
    """sha256 over the files' names and bytes: identifies the exact data a run saw."""
    files = sorted(Path(p) for p in paths)
    for path in files:
        if not path.is_file():
            raise UserError(
                f"{path} not found: run the stage that writes it first (`dvc repro`), or `make pull` "
                "it when a DVC remote has it"
            )
    return hashing.files_digest(files, name=lambda file: file.name)[:16]


def log_splits(run_log, splits: dict) -> None:
    """Record each split a stage read as an MLflow dataset input (name + content digest)."""
    for name, frame in splits.items():
        run_log.log_dataset(frame, name, files_digest([split_path(name)]), context=name)


def tokenized(
    frame,
    tok,
    max_length: int,
    *,
    labels: bool = True,
    truncation: str = "head",
    stride: int | None = None,
    max_windows: int | None = None,
):
    """A datasets.Dataset of token ids (unpadded: the collator pads each batch to its longest), long
    texts cut as `truncation` says (data/truncation.py); windows: one row per window, each with its
    text's label, so the dataset has more rows than `frame`."""
    from datasets import Dataset

    from transferlab.data.truncation import WINDOW_OF, encode

    columns = ["text", "label"] if labels else ["text"]

    def rows(batch):
        out = encode(tok, batch["text"], max_length, truncation, stride=stride, max_windows=max_windows)
        owner = out.pop(WINDOW_OF, range(len(batch["text"])))  # the text each row came from
        if labels:
            out["labels"] = [batch["label"][i] for i in owner]
        return out

    dataset = Dataset.from_pandas(frame[columns], preserve_index=False)
    return dataset.map(rows, batched=True, remove_columns=columns, desc="tokenizing")
