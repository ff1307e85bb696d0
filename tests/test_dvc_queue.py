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
    sh(
        "dvc",
        "exp",
        "run",
        "--queue",
        "-S",
        "experiment=tiny",
        "-S",
        "finetune.backbone_lr=1e-3,2e-3",
        cwd=project,
    )
    sh("dvc", "queue", "start", "-j", "2", cwd=project)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(
        sh("dvc", "queue", "logs", name, cwd=project, check=False).stdout[-3000:] for name in failed
    )
    assert status.count("Success") == 2, status + logs

    table = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    experiments = {
        exp["name"]: exp["revs"][0]["data"] for base in table for exp in base.get("experiments") or []
    }
    assert len(experiments) == 2
    for data in experiments.values():
        assert 0 <= data["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] <= 1
    lrs = sorted(d["params"]["params.yaml"]["data"]["finetune"]["backbone_lr"] for d in experiments.values())
    assert lrs == [0.001, 0.002]
    # Each queued experiment ran in a temporary copy; its stage runs are in the project's store.
    evaluations = runs(project, "tags.`transferlab.stage` = 'evaluate'")
    tagged = {run.data.tags.get("dvc.experiment") for run in evaluations}
    assert set(experiments) <= tagged


@pytest.mark.slow
def test_make_compare_runs_named_queued_experiments_and_a_rerun_restores_them(tiny_copy: Path):
    project = tiny_copy
    make = ("timeout", "900", "make", "compare", "STAMP=", "TORCH=cpu", "COMPARE=tiny", "SEEDS=3 4")
    workspace = ("params.yaml", "dvc.lock", "metrics/evaluate.json")
    before = {name: (project / name).read_bytes() for name in workspace}
    first = sh(*make, cwd=project)
    assert first.stdout.count("Running stage 'finetune'") == 2, first.stdout[-3000:]

    table = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    seeds = {
        exp["name"]: exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["seed"]
        for base in table
        for exp in base.get("experiments") or []
    }
    assert seeds == {"tiny-s3": 3, "tiny-s4": 4}
    # queued experiments ran in copies: the workspace keeps its config and outputs
    assert {name: (project / name).read_bytes() for name in workspace} == before
    report = (project / "reports" / "comparison.md").read_text()
    assert "| tiny |" in report and "| 2 seeds (3, 4) |" in report

    again = sh(*make, cwd=project)  # same names: replaced, every stage back from the run cache
    assert "Running stage" not in again.stdout and again.stdout.count("is cached") == 8, again.stdout[-3000:]
    table = json.loads(sh("dvc", "exp", "show", "--json", cwd=project).stdout)
    names = sorted(exp["name"] for base in table for exp in base.get("experiments") or [])
    assert names == ["tiny-s3", "tiny-s4"]


@pytest.mark.parametrize(
    "compare,seeds,expected",
    [
        ("tiny compare_nope", "3", "Could not find 'experiment/compare_nope'"),
        # before: the causal LM trained, then the report ended in a TypeError traceback
        ("tiny lm_tiny", "3", "experiment=lm_tiny is task=causal_lm: the comparison scores classifiers"),
        # before: DVC's "Having any troubles?" and no reason
        ("tiny", "3 abc", "argument --seeds: invalid int value: 'abc'"),
        # before: queued, failed in prepare, and the report said to run `make compare` first
        ("tiny", "3 -5", "seed=-5 must be in [0, 2**32 - 1 = 4294967295]"),
    ],
)
def test_make_compare_refuses_a_mistake_before_queueing_anything(tiny_copy: Path, compare, seeds, expected):
    project = tiny_copy
    result = sh(
        "make",
        "compare",
        "STAMP=",
        "TORCH=cpu",
        f"COMPARE={compare}",
        f"SEEDS={seeds}",
        cwd=project,
        check=False,
    )
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "tiny-s3" not in sh("dvc", "queue", "status", cwd=project).stdout, "nothing queued, not even tiny"
