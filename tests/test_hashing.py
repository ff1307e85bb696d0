"""One hasher serves the three digests that are persisted and compared later: the data.digest tags
(MLflow), the checkpoint staleness key (markers) and the stage cache keys (sweep cache folders).
Their values are pinned: they are the ones the three separate hashers computed before."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from transferlab.errors import UserError


def write_files(root: Path) -> None:
    files = {
        "data/prepared/train.parquet": b"train rows",
        "data/prepared/validation.parquet": b"validation rows",
        "models/pretrained/config.json": b"{}",
        "models/pretrained/sub/w.bin": bytes(range(256)) * 5000,
        "code/a.py": b"A = 1\n",
        "code/pkg/b.py": b"B = 2\n",
        "code/pkg/c.py": b"C = 3\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: x\n    deps: [code/a.py, code/pkg, missing.py]\n    params: [seed]\n"
        "    outs: [out]\n  train:\n    cmd: y\n    deps: [out, code/pkg/c.py]\n    params: [lr]\n"
    )


def test_the_persisted_digests_keep_their_values(workdir, monkeypatch):
    from transferlab.data.prepared import files_digest
    from transferlab.pipeline import WORKSPACE_ENV
    from transferlab.stage_cache import key
    from transferlab.training.checkpoints import inputs_digest

    write_files(workdir)
    # data.digest: names and bytes of the files, in sorted order; a missing file is an error.
    splits = ["data/prepared/validation.parquet", "data/prepared/train.parquet"]
    assert files_digest(splits) == "72e25454c06a00b8"
    with pytest.raises(UserError, match="missing.parquet not found"):
        files_digest(["data/prepared/missing.parquet"])
    # checkpoint inputs: paths as given, folders file by file, missing paths skipped.
    assert (
        inputs_digest(["data/prepared/validation.parquet", "models/pretrained", "missing.txt"])
        == "c826ff77006e1ed6bd7a"
    )
    # stage cache: the config fingerprint, then the code deps by their path in the workspace.
    monkeypatch.setenv(WORKSPACE_ENV, str(workdir))
    cfg = OmegaConf.create({"seed": 1, "lr": 0.5, "tracking": {}})
    assert (key(cfg, "prepare"), key(cfg, "train")) == ("29c98cd6b30391e789dd", "afed5984f3e668f39f0e")
    # Python's bytecode caches inside a code folder dep are not code: the keys stay (as in .dvcignore).
    (workdir / "code/pkg/__pycache__").mkdir()
    (workdir / "code/pkg/__pycache__/b.cpython-311.pyc").write_bytes(b"bytecode")
    assert (key(cfg, "prepare"), key(cfg, "train")) == ("29c98cd6b30391e789dd", "afed5984f3e668f39f0e")
    (workdir / "code/pkg/d.py").write_text("D = 4\n")  # a new module in the folder is
    assert key(cfg, "prepare") != "29c98cd6b30391e789dd"


def test_the_stage_cache_key_follows_the_data_file_and_a_relative_path_is_read_from_the_workspace(
    workdir, monkeypatch
):
    """A sweep's stages run in their cache entries, not the workspace: a relative data.path is read
    from the workspace, and an edit to the file changes every stage's key (before, an edited table
    reused the old split and models)."""
    from conftest import REPO, make_config
    from transferlab.data.sources import source_path
    from transferlab.pipeline import WORKSPACE_ENV
    from transferlab.stage_cache import key

    (workdir / "dvc.yaml").write_bytes((REPO / "dvc.yaml").read_bytes())
    table = workdir / "tables/table.csv"  # outside data/raw: hashed for its own sake
    table.parent.mkdir(parents=True)
    table.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(12)))
    monkeypatch.setenv(WORKSPACE_ENV, str(workdir))
    cfg = make_config("experiment=tiny", "data=files", "data.path=tables/table.csv")
    elsewhere = workdir / "entry"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert source_path(cfg.data.path) == table
    before = {stage: key(cfg, stage) for stage in ("prepare", "train", "finetune", "evaluate")}
    table.write_text(table.read_text().replace("t1,b", "t1,a"))
    after = {stage: key(cfg, stage) for stage in before}
    assert all(after[stage] != before[stage] for stage in before), (before, after)
