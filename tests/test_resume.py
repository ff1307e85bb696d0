"""Crash and resume through the real DVC CLI: a `dvc repro` killed with SIGKILL in the middle of
train and then of finetune, rerun, ends with exactly the metrics and weights of an uninterrupted
run and one FINISHED MLflow run per stage; a corrupt checkpoint and a diverging run stop with one
clear error and leave the previous outputs alone."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import copy_project, kill_when, sh, tool_env, wait_for_checkpoint

pytestmark = pytest.mark.slow
# Long enough to kill in the middle: 12 MLM steps, 3 epochs of 7 fine-tuning steps, and a
# checkpoint every 2 steps (the epoch ends, 7, 14 and 21, save on their own).
LONG = [
    "experiment=tiny",
    "train.steps=12",
    "finetune.epochs=3",
    "finetune.batch_size=4",
    "checkpoint.every_steps=2",
]
OUTPUTS = [
    "metrics/train.json",
    "metrics/finetune.json",
    "metrics/evaluate.json",
    "models/pretrained/model.safetensors",
    *(f"models/finetuned/{name}" for name in ("model.safetensors", "config.json", "training_log.json")),
]


def long_repo(dest: Path) -> Path:
    repo = copy_project(dest)
    sh("transferlab", "compose", *LONG, cwd=repo)
    sh("git", "commit", "-q", "-am", "long tiny run", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    repo = long_repo(tmp_path_factory.mktemp("uninterrupted") / "project")
    sh("dvc", "repro", cwd=repo)
    return repo


def runs(repo: Path) -> list[tuple[str, str]]:
    """(stage, status) of every run: its `transferlab.stage` tag (names say more, `finetune · <model>`),
    or its name when it has no such tag."""
    db = sqlite3.connect(repo / "mlflow.db")
    names = db.execute("select name from runs").fetchall()
    stages = ("prepare · ", "train · ", "finetune · ", "evaluate · ")
    assert all(name.startswith(stages) for (name,) in names), names
    return sorted(
        db.execute(
            "select coalesce((select value from tags where run_uuid = r.run_uuid and key = "
            "'transferlab.stage'), r.name), r.status from runs r"
        ).fetchall()
    )


def test_killed_twice_then_rerun_gives_the_uninterrupted_results(uninterrupted: Path, tmp_path: Path):
    repo = long_repo(tmp_path / "project")
    kill_when(["dvc", "repro"], repo, ".checkpoints/train/checkpoint-*/transferlab.json", min_step=4)
    assert not (repo / "models/pretrained").exists()
    kill_when(["dvc", "repro"], repo, ".checkpoints/finetune/checkpoint-*/transferlab.json", min_step=8)
    assert not (repo / "models/finetuned").exists()
    log = sh("dvc", "repro", cwd=repo)
    output = log.stdout + log.stderr
    assert "finetune: resuming from .checkpoints/finetune/checkpoint-" in output
    assert "MLflow run" in output and "(finetune, resumed)" in output
    for out in OUTPUTS:
        assert (repo / out).read_bytes() == (uninterrupted / out).read_bytes(), out
    # One run per stage: the resumed finetune logged into the run it started in, which finished.
    assert runs(repo) == [
        ("evaluate", "FINISHED"),
        ("finetune", "FINISHED"),
        ("prepare", "FINISHED"),
        ("train", "FINISHED"),
    ]
    assert not (repo / ".checkpoints").exists(), "checkpoints are removed once the stage succeeded"


def test_ctrl_c_stops_transferlab_run_cleanly_and_a_rerun_ends_as_an_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path
):
    repo = long_repo(tmp_path / "project")
    log = tmp_path / "interrupted.log"
    with log.open("w") as output:
        command = ["transferlab", "run"]
        pipeline = subprocess.Popen(
            command, cwd=repo, env=tool_env(), stdout=output, stderr=output, start_new_session=True
        )
    try:
        wait_for_checkpoint(repo, ".checkpoints/finetune/checkpoint-*/transferlab.json", 4, pipeline)
    finally:
        os.killpg(pipeline.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    assert pipeline.wait(timeout=300) == 130, log.read_text()[-3000:]
    with pytest.raises(ProcessLookupError):  # DVC and the stage ended before `transferlab run` did
        os.killpg(pipeline.pid, 0)
    status = sh("dvc", "status", cwd=repo)
    assert "had been killed" not in status.stdout + status.stderr, "DVC was killed holding its locks"
    db = sqlite3.connect(repo / "mlflow.db")
    statuses = dict(db.execute("select substr(name, 1, instr(name, ' ') - 1), status from runs").fetchall())
    assert statuses["pipeline"] == "FAILED" and statuses["finetune"] == "FAILED", statuses
    sh("transferlab", "run", cwd=repo)
    for out in OUTPUTS:
        assert (repo / out).read_bytes() == (uninterrupted / out).read_bytes(), out


@pytest.fixture
def finished(uninterrupted: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "finished"
    shutil.copytree(uninterrupted, copy, symlinks=True)
    return copy


def snapshot(repo: Path) -> dict[str, bytes]:
    return {out: (repo / out).read_bytes() for out in OUTPUTS}


def test_a_corrupt_checkpoint_is_named_and_nothing_is_overwritten(finished: Path):
    before = snapshot(finished)
    kill_when(
        ["transferlab", "finetune"],
        finished,
        ".checkpoints/finetune/checkpoint-*/transferlab.json",
        min_step=4,
    )
    complete = sorted(
        (p.parent for p in (finished / ".checkpoints/finetune").glob("*/transferlab.json")),
        key=lambda p: int(p.name.split("-")[1]),
    )
    newest = complete[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    result = sh("transferlab", "finetune", cwd=finished, check=False)
    assert result.returncode == 2
    rel = newest.relative_to(finished)
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [
        f"transferlab finetune: error: corrupt checkpoint: {rel}/model.safetensors does not match the "
        "digest recorded when it was saved (truncated or overwritten): delete "
        f"{rel} (training resumes from an earlier checkpoint, or starts over), or rerun with "
        "checkpoint.resume=false"
    ]
    assert snapshot(finished) == before
    # Following the advice, the next one back is used; here it carries a pickle that would run
    # code (with a forged digest): it is refused before Trainer sees it, and the code never runs.
    shutil.rmtree(newest)
    previous = complete[-2]
    payload = finished / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {payload}",))

    (previous / "optimizer.pt").write_bytes(pickle.dumps(Exploit()))
    marker = json.loads((previous / "transferlab.json").read_text())
    import hashlib

    marker["files"]["optimizer.pt"] = hashlib.sha256((previous / "optimizer.pt").read_bytes()).hexdigest()
    (previous / "transferlab.json").write_text(json.dumps(marker))
    result = sh("transferlab", "finetune", cwd=finished, check=False)
    assert result.returncode == 2
    assert (
        f"corrupt checkpoint: {previous.relative_to(finished)}/optimizer.pt is not a plain tensor file"
        in result.stderr
    )
    assert not payload.exists()
    assert snapshot(finished) == before


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(finished: Path):
    before = snapshot(finished)
    # A learning rate that blows up once warmup lets it act (step 1's LR is 0): the weights go to
    # ~1e29 at step 2, the loss is not a number at step 3. A checkpoint every step.
    sh(
        "transferlab",
        "compose",
        *LONG,
        "checkpoint.every_steps=1",
        "finetune.backbone_lr=1e30",
        "finetune.head_lr=1e30",
        cwd=finished,
    )
    result = sh("transferlab", "finetune", cwd=finished, check=False)
    assert result.returncode == 2
    [last] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert last.startswith("transferlab finetune: error: finetune: the training loss is nan at step ")
    step = int(last.split(" at step ")[1].split(":")[0])
    assert "the last good checkpoint is kept in .checkpoints/finetune; no outputs were written" in last
    kept = sorted(
        int(p.parent.name.split("-")[1])
        for p in (finished / ".checkpoints/finetune").glob("*/transferlab.json")
    )
    assert kept and max(kept) == step - 1, (kept, step)
    assert not (finished / f".checkpoints/finetune/checkpoint-{step}").exists()
    assert snapshot(finished) == before
