"""Collaboration through the default DVC remote (.dvc/config): it lies outside every work tree and is
the same directory for every clone on a machine, and a fresh `git clone` + `make pull` gets the
pipeline's outputs back so that nothing reruns. Real git, dvc and make in temp dirs; HOME points at
a temp dir, so the remote (~/...) is a temp dir too and the user's real one is never written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, sh

STAGES = ["prepare", "train", "finetune", "evaluate"]
REMOTE = Path(".local/share/transferlab/dvc-remote")  # under HOME: the url in .dvc/config is ~/...
# DVC-cached outs (the rest: git)
CACHED = ["data/prepared", "models/pretrained", "models/finetuned", "plots", "reports/evaluate"]
UNCACHED = ["metrics"]  # cache: false outs, committed with dvc.lock


def default_remote(repo: Path, home: Path) -> Path:
    """The default remote's directory as DVC resolves it in `repo` for a user whose HOME is `home`."""
    name = sh("dvc", "remote", "default", cwd=repo, HOME=str(home)).stdout.strip()
    return Path(sh("dvc", "config", f"remote.{name}.url", cwd=repo, HOME=str(home)).stdout.strip())


def make(target: str, repo: Path, home: Path) -> str:
    """`make <target>` as a user runs it, minus the .venv build (the test's venv is on PATH)."""
    result = sh("make", target, "STAMP=", "TORCH=cpu", cwd=repo, HOME=str(home))
    return result.stdout + result.stderr


def digests(repo: Path, paths: list[str]) -> dict[str, str]:
    return {
        str(f.relative_to(repo)): hashlib.md5(f.read_bytes()).hexdigest()
        for p in paths
        for f in sorted((repo / p).rglob("*"))
        if f.is_file()
    }


def test_default_remote_resolves_outside_the_work_tree_and_is_shared_by_clones(tmp_path: Path):
    home = tmp_path / "home"
    first = tmp_path / "a" / "project"
    (first / ".dvc").mkdir(parents=True)
    for name in (".dvc/config", ".dvc/.gitignore", "Makefile"):
        shutil.copy2(REPO / name, first / name)
    sh("git", "init", "-q", "-b", "main", cwd=first)
    remote = default_remote(first, home)
    assert remote == home / REMOTE, "the default remote is not ~/.local/share/transferlab/dvc-remote"
    for tree in (first, REPO):
        assert not remote.is_relative_to(tree), f"the default remote lies inside {tree}"
    # The repository's own config resolves it under the real HOME, outside this work tree.
    real = default_remote(REPO, Path.home())
    assert real.is_absolute() and not real.is_relative_to(REPO), real

    (first / "data.txt").write_text("shared through the default remote\n")
    sh("dvc", "add", "data.txt", cwd=first, HOME=str(home))
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-q", "-m", "data", cwd=first)
    assert "1 file pushed" in make("push", first, home)
    assert [p.name for p in remote.rglob("*") if p.is_file()], "make push wrote nothing to the remote"

    # A clone somewhere else on the machine (another depth too) finds the same remote.
    second = tmp_path / "b" / "deeper" / "clone"
    second.parent.mkdir(parents=True)
    sh("git", "clone", "-q", str(first), str(second), cwd=tmp_path)
    assert default_remote(second, home) == remote
    assert not (second / "data.txt").exists()
    assert "1 file fetched" in make("pull", second, home)
    assert (second / "data.txt").read_text() == "shared through the default remote\n"


@pytest.mark.slow
def test_fresh_clone_pulls_the_pipeline_and_reruns_nothing(tiny_copy: Path, tmp_path: Path):
    home = tmp_path / "home"
    first = tiny_copy
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-q", "-m", "tiny pipeline results", cwd=first)
    tracked = sh("git", "ls-files", *CACHED, *UNCACHED, "dvc.lock", cwd=first).stdout.split()
    assert "dvc.lock" in tracked and not [p for p in tracked if p.startswith(tuple(CACHED))]
    for out in UNCACHED:  # cache: false: git carries them, dvc push does not
        assert any(p.startswith(out + "/") for p in tracked), f"{out}/ is not committed"

    pushed = make("push", first, home)
    remote = home / REMOTE
    assert "files pushed" in pushed and remote.is_dir(), pushed

    second = tmp_path / "elsewhere" / "second"
    second.parent.mkdir(parents=True)
    sh("git", "clone", "-q", str(first), str(second), cwd=tmp_path)
    assert not any((second / p).exists() for p in CACHED)
    before = json.loads(sh("dvc", "status", "--json", cwd=second, HOME=str(home)).stdout)
    changed = {
        path for entries in before.values() for entry in entries for paths in entry.values() for path in paths
    }
    assert sorted(before) == sorted(STAGES) and all(p.startswith(tuple(CACHED)) for p in changed), before

    assert "files fetched" in make("pull", second, home)
    assert digests(second, CACHED + UNCACHED) == digests(first, CACHED + UNCACHED)
    assert json.loads(sh("dvc", "status", "--json", cwd=second, HOME=str(home)).stdout) == {}
    log = sh("dvc", "repro", cwd=second, HOME=str(home)).stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in log, log
    assert "Running stage" not in log and "Data and pipelines are up to date." in log, log
