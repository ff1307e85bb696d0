"""`transferlab run`: `dvc repro` under one parent run, its stages' runs linked to it and to the
DVC-cached files they made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from transferlab.tracking.identity import run_name
from transferlab.tracking.runs import StageRun, child_runs, close_run, nested_under, open_run
from transferlab.tracking.store import answering, tracking_uri

STOP_GRACE_SECONDS = 60  # for DVC and its stage to stop after Ctrl-C


def pipeline_run(cfg, command: list[str]) -> int:
    """Run `command` (dvc repro ...) under a parent MLflow run: stages that run become its children;
    stages DVC skipped are linked by their producing run's id. Returns the command's exit code."""
    if not cfg.tracking.enabled:
        return run_to_its_end(command)
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = open_run(
        cfg, "pipeline", tags={"transferlab.command": " ".join(command)}, title=run_name("pipeline", cfg)
    )
    code = 1
    try:
        with nested_under(parent):
            code = run_to_its_end(command)
        with answering(tracking_uri(cfg), "the pipeline"):
            children = {run.data.tags.get("transferlab.stage"): run.info.run_id for run in child_runs(parent)}
            parent.link_skipped(children)
            if code == 0:
                tag_lock_hashes(parent, children)
    finally:
        close_run(parent, failed=code != 0)
    return code


def run_to_its_end(command: list[str], grace_seconds: float = STOP_GRACE_SECONDS) -> int:
    """`command`'s exit code. On Ctrl-C, which the terminal sends to DVC and its stage as well, wait
    for them to stop on their own (the stage puts its last good outputs back, DVC releases its
    locks): `subprocess.call` would SIGKILL DVC a quarter of a second later. A command still running
    after `grace_seconds` gets the SIGINT from here (it was not in the terminal's process group),
    and is killed after as long again."""
    import signal

    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        for last_resort in (lambda: process.send_signal(signal.SIGINT), process.kill):
            try:
                process.wait(timeout=grace_seconds)
                break
            except subprocess.TimeoutExpired:
                last_resort()
        process.wait()
        raise


def tag_lock_hashes(parent: StageRun, children: dict[str, str], lock: str = "dvc.lock") -> None:
    """Copy each stage's output hashes from dvc.lock onto the parent run (all stages) and onto the
    child run of each stage that ran, so a run names the exact DVC-cached files it made."""
    import yaml

    if not Path(lock).is_file():
        return
    import mlflow

    client = mlflow.MlflowClient()
    for stage, entry in (yaml.safe_load(Path(lock).read_text()).get("stages") or {}).items():
        hashes = {f"dvc.lock.{stage}.{out['path']}": out.get("md5", "") for out in entry.get("outs", [])}
        for key, value in hashes.items():
            client.set_tag(parent.run_id, key, value)
            if stage in children:
                client.set_tag(children[stage], key, value)
