"""`dvc exp run --queue` + `dvc queue start` with experiment=tiny: the queued experiments run in
temporary copies, land in DVC's experiment table, and log their stage runs to the project's store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import runs, sh


@pytest.mark.slow
def test_dvc_queue_runs_two_experiments_that_land_in_the_project_store(tiny_copy: Path):
    project = tiny_copy  # prepare and train come back from DVC's run cache: only the lr differs
    sh("dvc", "exp", "run", "--queue", "-S", "experiment=tiny", "-S", "finetune.backbone_lr=1e-3,2e-3",
       cwd=project)
    sh("dvc", "queue", "start", "-j", "2", cwd=project)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(sh("dvc", "queue", "logs", name, cwd=project, check=False).stdout[-3000:]
                   for name in failed)
    assert status.count("Success") == 2, status + logs

    table = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    experiments = {exp["name"]: exp["revs"][0]["data"]
                   for base in table for exp in base.get("experiments") or []}
    assert len(experiments) == 2
    for data in experiments.values():
        assert 0 <= data["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] <= 1
    lrs = sorted(d["params"]["params.yaml"]["data"]["finetune"]["backbone_lr"] for d in experiments.values())
    assert lrs == [0.001, 0.002]
    # Each queued experiment ran in a temporary copy; its stage runs are in the project's store.
    evaluations = runs(project, "tags.`transferlab.stage` = 'evaluate'")
    tagged = {run.data.tags.get("dvc.experiment") for run in evaluations}
    assert set(experiments) <= tagged
