"""The bad-input battery: each mistake a user can make, through the real CLI (`transferlab ...`,
`dvc exp run -S ...`) in a copy of a project that already holds good outputs from a tiny run.
Every case must end with exit code != 0, exactly one `error:` line naming what is wrong and where,
no traceback, no temporary files left behind, and the previous outputs byte for byte as they were.

Cases that get past composition run the stage command DVC would run; the last test runs such
mistakes through `dvc exp run` and `dvc repro` themselves: DVC deletes the stage's outputs before
the stage starts (they are not `persist: true`, which keeps DVC's run cache on), and the failing
stage puts the last good ones back from DVC's cache, saying so on one line."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from conftest import sh

pytestmark = pytest.mark.slow
OUTPUTS = ("data/prepared", "models", "metrics", "plots", "reports", "dvc.lock")
DVC_EXP = ("dvc", "exp", "run", "-S", "experiment=tiny", "-S")


@dataclass
class Case:
    command: tuple[str, ...]
    expected: tuple[str, ...]  # all on the one error line
    data: dict[str, bytes] = field(default_factory=dict)  # files written into the project first
    compose: tuple[str, ...] = ()  # `transferlab compose` overrides run first (a valid config)
    elsewhere: str = ""  # also somewhere in the output (DVC prints Hydra's reason on a second line)

    @property
    def keeps_params(self) -> bool:  # nothing was composed on purpose, so params.yaml must not change
        return not self.compose


def csv(rows: list[tuple[str, str]], columns=("body", "topic")) -> bytes:
    return pd.DataFrame(rows, columns=list(columns)).to_csv(index=False).encode()


GOOD_ROWS = [(f"{label} document {i}", label) for label in ("alpha", "beta", "gamma") for i in range(6)]
ONE_LABEL = [(f"alpha document {i}", "alpha") for i in range(6)]  # six rows, one label
TWO_EACH = [(f"{label} document {i}", label) for label in ("alpha", "beta") for i in range(2)]


def files_case(name: str, content: bytes, *expected: str) -> Case:
    return Case(
        ("transferlab", "prepare"),
        (f"data.path {name}", *expected),
        data={name: content},
        compose=(
            "experiment=tiny",
            "data=files",
            f"data.path={name}",
            "data.text_column=body",
            "data.label_column=topic",
        ),
    )


CASES = {
    "zero-byte file": files_case("zero.csv", b"", "is empty"),
    "header only": files_case("header.csv", b"body,topic\n", "no rows with both text and label"),
    "no text column": files_case(
        "notext.csv", csv(GOOD_ROWS, ("text", "topic")), "has no column 'body'", "it has 'text', 'topic'"
    ),
    "no label column": files_case(
        "nolabel.csv",
        csv(GOOD_ROWS, ("body", "category")),
        "has no column 'topic'",
        "it has 'body', 'category'",
    ),
    "not utf-8": files_case(
        "latin.csv",
        csv(GOOD_ROWS[:2]) + "café au lait,alpha\n".encode("latin-1"),
        "is not UTF-8 (line 4: byte 0xe9 at offset",
    ),
    "label too small for three splits": files_case(
        "small.csv",
        csv(GOOD_ROWS + [("delta one", "delta"), ("delta two", "delta")]),
        "labels with fewer than 3 examples: 'delta' (2)",
    ),
    # what the task cannot use, refused by prepare before it replaces the prepared data
    "one label": files_case(
        "one_class.csv",
        csv(ONE_LABEL),
        "task=classification needs at least 2 labels",
        "the data has one, 'alpha' (6 examples)",
    ),
    "every label too small": files_case(
        "tiny_labels.csv", csv(TWO_EACH), "labels with fewer than 3 examples: 'alpha' (2), 'beta' (2)"
    ),
    "blank texts": files_case(
        "blank.csv",
        csv([("   ", "alpha"), ("\t", "beta")] * 3),
        "no text: every row's text is empty or blank",
    ),
    "causal_lm with two texts": Case(
        ("transferlab", "prepare"),
        ("data.path short.txt", "task=causal_lm needs at least 3 texts", "the data has 2"),
        data={"short.txt": b"A first story.\n\nA second story.\n"},
        compose=("experiment=lm_tiny", "data=text", "data.path=short.txt", "lm.domain=null"),
    ),
    "unknown top-level key": Case(
        (*DVC_EXP, "nosuch.key=1"),
        ("Could not override 'nosuch.key'",),
        elsewhere="Key 'nosuch' not in 'Config'",
    ),
    "unknown finetune key": Case(
        (*DVC_EXP, "finetune.nosuch=1"),
        ("Could not override 'finetune.nosuch'",),
        elsewhere="Key 'nosuch' not in 'FinetuneConfig'",
    ),
    # The issue's `finetune.lr=abc`: the schema has no finetune.lr, and that is what it says.
    "finetune.lr=abc": Case(
        (*DVC_EXP, "finetune.lr=abc"),
        ("Could not override 'finetune.lr'",),
        elsewhere="Key 'lr' not in 'FinetuneConfig'",
    ),
    "wrong type": Case(
        (*DVC_EXP, "finetune.backbone_lr=abc"),
        ("finetune.backbone_lr=abc", "'abc'", "could not be converted to Float"),
    ),
    "unknown option": Case((*DVC_EXP, "model=gpt17"), ("Could not find 'model/gpt17'",)),
    # a choice field (a StrEnum in the schema): refused while DVC composes, before any stage runs
    "not a choice": Case(
        (*DVC_EXP, "device=gpu"),
        ("device=gpu",),
        elsewhere="Invalid value 'gpu', expected one of [auto, cpu, cuda]",
    ),
    "zero finetune batch": Case(
        ("transferlab", "compose", "experiment=tiny", "finetune.batch_size=0"),
        ("invalid config: finetune.batch_size=0 must be > 0",),
    ),
    "negative finetune batch": Case(
        ("transferlab", "compose", "experiment=tiny", "finetune.batch_size=-4"),
        ("invalid config: finetune.batch_size=-4 must be > 0",),
    ),
    "zero train batch": Case(
        ("transferlab", "compose", "experiment=tiny", "train.batch_size=0"),
        ("invalid config: train.batch_size=0 must be > 0",),
    ),
    "model path missing": Case(
        ("transferlab", "train"),
        ("model.name_or_path='/does/not/exist' does not exist",),
        compose=("experiment=tiny", "model=minilm", "model.name_or_path=/does/not/exist"),
    ),
    "unwritable output folder": Case(
        ("transferlab", "train"), ("cannot write output models/pretrained", "models/ cannot be written")
    ),
}


def snapshot(repo: Path, with_params: bool) -> dict[str, str]:
    """A digest of every output file (and params.yaml when it must not change)."""
    digests = {}
    for name in OUTPUTS + (("params.yaml",) if with_params else ()):
        path = repo / name
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            digests[str(file.relative_to(repo))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def leftovers(repo: Path) -> list[Path]:
    """Staged temporaries (`.name.tmp-PID`, `params.yaml.tmp-compose`) anywhere in the project."""
    return [p for p in repo.rglob("*.tmp-*") if ".git" not in p.parts and ".dvc" not in p.parts]


@contextmanager
def unwritable(folder: Path):
    """`folder` refuses new entries for the duration. chmod is enough for a normal user; root
    ignores permission bits, so as root the folder is made immutable (chattr +i, which root's
    writes also obey on ext4/xfs/btrfs) instead. Either way its contents stay as they were."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):  # root: the mode bits do not stop it
            result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"running as root and chattr +i is unavailable here: {result.stderr.strip()}")
            immutable = True
            probe = folder / ".probe"
            with pytest.raises(OSError):  # the simulation must really refuse writes
                probe.mkdir()
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_ends_in_one_clear_error_and_keeps_the_good_outputs(tiny_copy: Path, name: str):
    case = CASES[name]
    for file, content in case.data.items():
        (tiny_copy / file).write_bytes(content)
    if case.compose:
        sh("transferlab", "compose", *case.compose, cwd=tiny_copy)
    before = snapshot(tiny_copy, case.keeps_params)
    assert before, "the tiny project has no outputs to protect"

    if name == "unwritable output folder":
        with unwritable(tiny_copy / "models"):
            result = sh(*case.command, cwd=tiny_copy, check=False)
    else:
        result = sh(*case.command, cwd=tiny_copy, check=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = [line for line in output.splitlines() if re.search(r"error:", line, re.IGNORECASE)]
    assert len(errors) == 1, output
    for part in case.expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    assert case.elsewhere in output
    assert "Traceback" not in output, output
    assert not leftovers(tiny_copy)
    assert snapshot(tiny_copy, case.keeps_params) == before


DVC_ROUTE = {  # name: (`transferlab compose` overrides or (), the command, the stage's error, data files)
    # passes composition (the type is right), then the finetune stage refuses the value
    "dvc exp run -S finetune.batch_size=0": (
        (),
        (*DVC_EXP, "finetune.batch_size=0"),
        "transferlab finetune: error: invalid config: finetune.batch_size=0 must be > 0",
        {},
    ),
    # a valid params.yaml naming a checkpoint that is not there, then `dvc repro`
    "dvc repro with a missing model.name_or_path": (
        ("experiment=tiny", "model.name_or_path=/does/not/exist"),
        ("dvc", "repro"),
        "transferlab train: error: model.name_or_path='/does/not/exist' does not exist",
        {},
    ),
    # data the task cannot use: prepare refuses it, so the good prepared data and its metrics stay
    # (before, a one-label table replaced them and finetune failed two stages later)
    "dvc exp run -S data.path=one_class.csv": (
        (),
        (*DVC_EXP, "data=files", "-S", "data.path=one_class.csv"),
        "transferlab prepare: error: data.path one_class.csv: task=classification needs at least 2 labels",
        {"one_class.csv": csv(ONE_LABEL, ("text", "label"))},
    ),
    "dvc exp run -S data.path=tiny_labels.csv": (
        (),
        (*DVC_EXP, "data=files", "-S", "data.path=tiny_labels.csv"),
        "transferlab prepare: error: data.path tiny_labels.csv: labels with fewer than 3 examples: "
        "'alpha' (2), 'beta' (2)",
        {"tiny_labels.csv": csv(TWO_EACH, ("text", "label"))},
    ),
}


@pytest.mark.parametrize("name", DVC_ROUTE)
def test_a_stage_that_fails_under_dvc_keeps_the_last_good_outputs(tiny_copy: Path, name: str):
    compose, command, expected, data = DVC_ROUTE[name]
    for file, content in data.items():
        (tiny_copy / file).write_bytes(content)
    if compose:
        sh("transferlab", "compose", *compose, cwd=tiny_copy)
    before = snapshot(tiny_copy, with_params=False)
    result = sh(*command, cwd=tiny_copy, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output
    stage = expected.split(":")[0]  # `transferlab STAGE`: the stage says what is wrong on one line
    stage_errors = [line for line in output.splitlines() if f"{stage}: error:" in line]
    assert len(stage_errors) == 1 and expected in stage_errors[0], output
    assert f"{stage}: put back the last good outputs: " in output, output
    assert "Traceback" not in output, output
    assert not leftovers(tiny_copy)
    assert snapshot(tiny_copy, with_params=False) == before, "DVC or the stage touched the last good outputs"
    status = sh("dvc", "status", cwd=tiny_copy).stdout
    assert "changed" in status, "dvc status must still show the failed stage as out of date"


def test_a_failed_stage_in_a_fresh_clone_keeps_the_committed_metrics(tiny_copy: Path, tmp_path: Path):
    """A fresh clone has the committed metrics files (`cache: false`, so git's) and an empty DVC
    cache; DVC deletes them before the failing stage starts, and the stage puts them back from the
    last commit (before, `git status` then showed them deleted)."""
    sh("git", "add", "-A", cwd=tiny_copy)
    sh("git", "commit", "-q", "-m", "the tiny run's outputs", cwd=tiny_copy)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(tiny_copy), str(clone), cwd=tmp_path)
    result = sh(*DVC_EXP, "finetune.batch_size=0", cwd=clone, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "transferlab prepare: error: invalid config: finetune.batch_size=0 must be > 0" in output, output
    assert "transferlab prepare: put back the last good outputs: metrics/data.json" in output, output
    changed = sh("git", "status", "--porcelain", "--", "metrics", cwd=clone).stdout
    assert not changed, f"the committed metrics changed:\n{changed}"
