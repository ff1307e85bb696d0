"""The prepare stage on real files: every supported format, the BBC News corpus, and each bad input
ending in one clear error with no outputs left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_config
from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.stages import prepare

LABELS = ("alpha", "beta", "gamma")


def table(rows_per_label: int = 10) -> pd.DataFrame:
    rows = [
        {"body": f"{label} document number {i}", "topic": label}
        for label in LABELS
        for i in range(rows_per_label)
    ]
    return pd.DataFrame(rows)


def files_config(path: Path, *extra: str):
    return make_config(
        "data=files",
        f"data.path={path}",
        "data.text_column=body",
        "data.label_column=topic",
        "tracking.enabled=false",
        *extra,
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_files_in_every_format_split_stratified(workdir, suffix):
    path = workdir / f"input{suffix}"
    frame = table()
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".json": lambda: frame.to_json(path, orient="records"),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()

    stats = prepare.run(files_config(path))

    assert json.loads(prepared.labels_path().read_text()) == list(LABELS)
    parts = {s: pd.read_parquet(prepared.split_path(s)) for s in prepared.SPLITS}
    assert sum(len(p) for p in parts.values()) == 30
    for name, part in parts.items():
        assert sorted(part["label"].unique()) == [0, 1, 2], f"{name} misses a label"
        assert list(part.columns) == ["text", "label"]
    assert len(parts["validation"]) == len(parts["test"]) == 6  # round(10 * 0.15) = 2 per label
    texts = [set(p["text"]) for p in parts.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert json.loads(prepare.DETAIL.read_text()) == stats
    assert json.loads(Path(prepare.STATS).read_text()) == {  # the DVC metrics: split sizes only
        name: {"examples": len(part)} for name, part in parts.items()
    }
    assert stats["train"]["per_label"] == {"alpha": 6, "beta": 6, "gamma": 6}


def test_split_is_seeded(workdir):
    path = workdir / "input.csv"
    table().to_csv(path, index=False)
    prepare.run(files_config(path))
    first = prepared.split_path("test").read_bytes()
    prepare.run(files_config(path))
    assert prepared.split_path("test").read_bytes() == first
    prepare.run(files_config(path, "seed=7"))
    assert prepared.split_path("test").read_bytes() != first


def test_duplicates_and_blank_rows_are_dropped(workdir):
    frame = pd.concat([table(), table().head(4)])
    frame.loc[len(frame)] = [None, "alpha"]
    path = workdir / "input.csv"
    frame.to_csv(path, index=False)
    stats = prepare.run(files_config(path))
    assert stats["duplicates_dropped"] == 4
    assert sum(stats[s]["examples"] for s in prepared.SPLITS) == 30


def test_bbc_news_from_the_package(workdir):
    stats = prepare.run(make_config("tracking.enabled=false", "data.max_per_label=6"))
    assert json.loads(prepared.labels_path().read_text()) == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    assert sum(stats[s]["examples"] for s in prepared.SPLITS) == 30
    assert stats["duplicates_dropped"] == 98  # the corpus ships 98 exact duplicates


def test_bbc_news_decodes_every_file():
    from transferlab.data.sources import bbc_news

    frame = bbc_news()
    assert len(frame) == 2225 and frame["label"].nunique() == 5
    assert not frame["text"].str.contains("\ufffd").any()


def bad_input_cases(workdir: Path):
    csv = workdir / "input.csv"
    yield "missing file", workdir / "absent.csv", "does not exist"
    (workdir / "empty.csv").write_text("")
    yield "empty file", workdir / "empty.csv", "is empty"
    (workdir / "header.csv").write_text("body,topic\n")
    yield "header only", workdir / "header.csv", "no rows with both text and label"
    table().rename(columns={"topic": "category"}).to_csv(csv, index=False)
    yield "no label column", csv, "has no column 'topic'"
    lonely = workdir / "lonely.csv"
    pd.concat([table(), pd.DataFrame([{"body": "only one", "topic": "delta"}])]).to_csv(lonely, index=False)
    yield "label with one example", lonely, "'delta' (1)"
    one_label = workdir / "one_label.csv"
    table()[lambda t: t["topic"] == "alpha"].to_csv(one_label, index=False)
    yield "one label", one_label, "task=classification needs at least 2 labels; the data has one, 'alpha'"
    blank = workdir / "blank.csv"
    blank.write_text('body,topic\n"  ",alpha\n" ",beta\n"   ",gamma\n')
    yield "blank texts", blank, "no text: every row's text is empty or blank"
    latin = workdir / "latin.csv"
    latin.write_bytes("body,topic\ncaf\xe9 au lait,alpha\n".encode("latin-1"))
    yield "not utf-8", latin, "is not UTF-8"
    odd = workdir / "input.xlsx"
    odd.write_text("x")
    yield "unsupported type", odd, "unsupported file type"


def test_bad_input_fails_clearly_and_writes_nothing(workdir):
    for name, path, expected in list(bad_input_cases(workdir)):
        with pytest.raises(UserError) as caught:
            prepare.run(files_config(path))
        assert expected in str(caught.value), name
        assert not Path("data/prepared").exists(), name
        assert not Path(prepare.STATS).exists(), name
        assert not list(Path().glob("**/.*.tmp-*")), name


def test_a_failure_keeps_the_previous_good_outputs(workdir):
    good = workdir / "good.csv"
    table().to_csv(good, index=False)
    prepare.run(files_config(good))
    before = prepared.split_path("train").read_bytes()
    with pytest.raises(UserError):
        prepare.run(files_config(workdir / "absent.csv"))
    assert prepared.split_path("train").read_bytes() == before


def test_large_fractions_still_leave_every_label_an_example_to_train_on(workdir):
    """4 examples a label, 0.44 each for validation and test (round(1.76) = 2 each): train keeps one."""
    path = workdir / "input.csv"
    table(4).to_csv(path, index=False)
    stats = prepare.run(files_config(path, "data.validation_fraction=0.44", "data.test_fraction=0.44"))
    for name in prepared.SPLITS:
        assert set(stats[name]["per_label"]) == set(LABELS), name
    assert stats["train"]["per_label"] == dict.fromkeys(LABELS, 1)


def test_a_data_file_outside_data_raw_is_read_with_a_warning_that_dvc_cannot_see_it(workdir, caplog):
    """prepare's dvc.yaml dependency is data/raw/: a file there is watched, one elsewhere is not."""
    outside, inside = workdir / "input.csv", workdir / "data/raw/input.csv"
    inside.parent.mkdir(parents=True)
    table().to_csv(outside, index=False)
    table().to_csv(inside, index=False)
    prepare.run(files_config(outside))
    assert "is outside data/raw/, which is what dvc.yaml watches" in caplog.text
    caplog.clear()
    prepare.run(files_config("data/raw/input.csv"))
    assert "outside data/raw" not in caplog.text


def test_labels_are_the_cells_text_whole_numbers_stay_whole_and_spaces_around_them_go(workdir):
    """A numeric label column with a blank cell reads as floats (before: labels "1.0", "2.0"), and
    " sport" / "sport " were two labels."""
    path = workdir / "input.csv"
    rows = [f"text {i},{1 + i % 2}" for i in range(12)] + ["text without label,", "text 12, 1", "text 13,2 "]
    path.write_text("body,topic\n" + "\n".join(rows) + "\n")
    prepare.run(files_config(path))
    assert json.loads(prepared.labels_path().read_text()) == ["1", "2"]


def test_a_real_label_named_all_gets_no_unlabelled_hint(workdir):
    path = workdir / "input.csv"
    pd.DataFrame({"body": [f"text {i}" for i in range(6)], "topic": ["all"] * 6}).to_csv(path, index=False)
    with pytest.raises(UserError, match="needs at least 2 labels") as refusal:
        prepare.run(files_config(path))
    assert "label_column is null" not in str(refusal.value)


def test_the_text_column_taken_for_the_labels_ends_in_a_short_line(workdir):
    """Every text is then a label of its own: ten are named, the rest counted (before: one line of
    every text, 5.5 KB for 60 rows)."""
    path = workdir / "input.csv"
    table().to_csv(path, index=False)
    with pytest.raises(UserError, match=r"and 20 more\. Every label needs") as refusal:
        prepare.run(files_config(path, "data.label_column=body"))
    assert len(str(refusal.value)) < 1000


@pytest.mark.parametrize(
    "label_column,expected",
    [
        (
            "topic",
            "lm.domain='tech' is not a label of this data; labels: alpha, beta, gamma (or lm.domain=null)",
        ),
        ("null", "lm.domain='tech' picks texts by label, but these are unlabelled: use lm.domain=null"),
    ],
)
def test_a_causal_lm_domain_the_data_has_not_got_is_refused_before_anything_is_written(
    workdir, label_column, expected
):
    """Before: prepare and train replaced their outputs, and finetune refused the domain."""
    path = workdir / "input.csv"
    table().to_csv(path, index=False)
    cfg = files_config(path, "task=causal_lm", "lm.domain=tech", f"data.label_column={label_column}")
    with pytest.raises(UserError) as refusal:
        prepare.run(cfg)
    assert expected in str(refusal.value)
    assert not Path("data/prepared").exists()
    prepare.run(files_config(path, "task=causal_lm", "lm.domain=beta"))
