"""The console script as a user meets it: fast help, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, sh


def test_help_lists_every_stage_without_importing_heavy_libraries():
    code = (
        "import sys; from transferlab.cli import parser\n"
        "try: parser().parse_args(['--help'])\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'hydra') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    for stage in ("prepare", "train", "finetune", "evaluate", "compose"):
        assert stage in out
    assert "HEAVY []" in out


def test_bad_params_end_in_one_message_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text(
        (REPO / "params.yaml").read_text().replace("batch_size: 32", "batch_size: -3")
    )
    result = sh("transferlab", "finetune", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "finetune.batch_size=-3 must be > 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_says_which_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    result = sh("transferlab", "train", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "run the stage that writes it first" in result.stderr
    assert "Traceback" not in result.stderr


def test_compose_writes_params_only_when_valid(tmp_path):
    conf = str(REPO / "conf")
    out = tmp_path / "params.yaml"
    sh("transferlab", "compose", "--config-dir", conf, "-o", str(out), "model=scratch", cwd=tmp_path)
    assert "init: scratch" in out.read_text()
    bad = sh(
        "transferlab",
        "compose",
        "--config-dir",
        conf,
        "-o",
        str(out),
        "finetune.epochs=0",
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode == 2 and "finetune.epochs=0 must be > 0" in bad.stderr
    assert "init: scratch" in out.read_text() and not list(tmp_path.glob("*.tmp-*"))
    nested = tmp_path / "configs" / "scratch" / "params.yaml"  # a folder that is not there yet
    sh("transferlab", "compose", "--config-dir", conf, "-o", str(nested), "model=scratch", cwd=tmp_path)
    assert "init: scratch" in nested.read_text()


@pytest.mark.parametrize(
    "override,expected",
    [
        ("data.path=/tmp/x.csv", "data.path='/tmp/x.csv' is ignored by data.source=bbc_news"),
        ("train.mlm_probability=0", "train.mlm_probability=0.0 must be in (0, 1)"),
        ("seed=4294967296", "seed=4294967296 must be in [0, 2**32 - 1 = 4294967295]"),
        ("model.max_length=1", "model.max_length=1 must be >= 8"),
    ],
)
def test_compose_refuses_in_one_line_and_writes_nothing(tmp_path, override, expected):
    out = tmp_path / "params.yaml"
    args = ("transferlab", "compose", "--config-dir", str(REPO / "conf"), "-o", str(out), "experiment=tiny")
    result = sh(*args, override, cwd=tmp_path, check=False)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"transferlab compose: error: invalid config: {expected}")
    assert list(tmp_path.iterdir()) == []


def test_compose_to_a_folder_or_below_a_file_says_so_and_leaves_nothing(tmp_path):
    conf = str(REPO / "conf")
    folder = tmp_path / "configs"
    folder.mkdir()
    result = sh("transferlab", "compose", "--config-dir", conf, "-o", str(folder), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"transferlab compose: error: -o {folder} is a folder: name the file to write, "
        f"e.g. -o {folder / 'params.yaml'}"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"] and not list(folder.iterdir())
    (tmp_path / "notes").write_text("")
    below = tmp_path / "notes" / "params.yaml"
    result = sh("transferlab", "compose", "--config-dir", conf, "-o", str(below), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"transferlab compose: error: -o {below}: {tmp_path / 'notes'} is a file, not a folder"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "notes"]
