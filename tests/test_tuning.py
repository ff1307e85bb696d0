"""`transferlab tune`: Optuna workers on one study. The pieces first (search space, per-epoch
objective, which RUNNING trials are abandoned), then two real worker processes with experiment=tiny:
per-epoch reports, the median pruner, one MLflow run per trial under one sweep run, and a rerun
that tops the study up after a killed worker's trial."""

from __future__ import annotations

import datetime
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from conftest import REPO, children, copy_project, optuna_search, sh, stage_of, study, sweeps


def test_the_search_space_is_the_hydra_optuna_sweepers(monkeypatch):
    """The sweeper's own distribution classes (optuna refuses another class for a name a study has)."""
    import optuna

    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from transferlab.optuna_study import compose, search_space, suggest

    monkeypatch.chdir(REPO)
    raw = compose(["hparams_search=finetune_optuna"])
    space, fixed = search_space(raw)
    assert fixed == [] and sorted(space) == [
        "finetune.backbone_lr",
        "finetune.head_lr",
        "finetune.layer_lr_decay",
        "finetune.warmup_ratio",
    ]
    sweepers, _ = create_params_from_overrides([f"{k}={v}" for k, v in raw.hydra.sweeper.params.items()])
    assert {k: (type(v), v) for k, v in space.items()} == {k: (type(v), v) for k, v in sweepers.items()}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = {name: suggest(trial, name, distribution) for name, distribution in space.items()}
    assert 1e-5 <= values["finetune.backbone_lr"] <= 3e-4 and values["finetune.warmup_ratio"] in (0.0, 0.1)
    assert trial.distributions == sweepers


def test_a_study_searched_over_another_space_ends_in_one_line(tmp_path):
    """A study `tune` began with optuna 5's own classes (before it used the sweeper's) cannot take
    the sweeper's: one line, before any trial fails on it."""
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    trial = old.ask()
    trial.suggest_float("finetune.head_lr", 1e-4, 3e-3, log=True)
    old.tell(trial, 0.5)
    result = sh(
        "transferlab",
        "tune",
        "experiment=tiny",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=old",
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        "transferlab tune: error: study old searched finetune.head_lr as FloatDistribution" in result.stderr
    )
    assert "pick another hydra.sweeper.study_name" in result.stderr
    assert len(optuna.load_study(study_name="old", storage=storage).trials) == 1


def test_a_storage_that_cannot_be_opened_ends_in_one_line(tmp_path):
    missing = f"sqlite:///{tmp_path}/no/such/folder/optuna.db"
    result = sh(
        "transferlab", "tune", "experiment=tiny", f"hydra.sweeper.storage={missing}", cwd=REPO, check=False
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot open Optuna storage {missing}: unable to open database file" in result.stderr
    assert not (tmp_path / "no").exists()


def test_an_epoch_reports_the_objective_of_the_best_epoch_so_far():
    from transferlab.training.callbacks import objective_so_far

    history = [
        {"loss": 2.0, "epoch": 1.0},
        {"eval_loss": 1.5, "eval_accuracy": 0.6, "epoch": 1.0},
        {"eval_loss": 1.7, "eval_accuracy": 0.7, "epoch": 2.0},
    ]
    assert objective_so_far(history, "best_validation_accuracy") == 0.6  # the epoch finetune keeps
    assert objective_so_far(history, "best_validation_loss") == 1.5


def test_only_a_dead_workers_trials_are_abandoned():
    from types import SimpleNamespace

    from transferlab.optuna_study import worker_gone

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = datetime.datetime.now()

    def trial(worker=None, age=0):
        return SimpleNamespace(
            user_attrs={"worker": worker} if worker else {},
            datetime_start=now - datetime.timedelta(seconds=age),
        )

    host = socket.gethostname()
    assert worker_gone(trial(f"{host}:{dead.pid}"))
    assert not worker_gone(trial(f"{host}:{os.getpid()}"))
    assert not worker_gone(trial(f"another-{host}:{dead.pid}"))  # that machine's to judge
    assert worker_gone(trial(age=120)) and not worker_gone(trial(age=1))  # the Hydra sweeper's


# Two regimes, so that the pruner has something to prune: head_lr 1e-5 leaves the tiny model's
# validation loss at ln 5 = 1.609, head_lr 1.0 sends it up (2.9 after one epoch, 8.9 after two).
# Seeded apart per worker, the random sampler draws 1e-5 then 1.0 in both workers (seeds 10 and 11),
# so the trials after the first ones are judged against a complete good trial and pruned after
# their first epoch. A repeated good config reuses the first one's fine-tuning (stage cache).
TUNE = (
    "transferlab",
    "tune",
    "--workers",
    "2",
    "hparams_search=tuned",
    "experiment=tiny",
    "finetune.epochs=2",
    "finetune.backbone_lr=1e-5",
    "sweep.objective=best_validation_loss",
    "sweep.direction=minimize",
    "sweep.pruner.n_startup_trials=1",
)


@pytest.mark.slow
@pytest.mark.cluster
def test_two_workers_prune_bad_trials_and_a_rerun_tops_the_study_up(tmp_path):
    from optuna.trial import TrialState

    repo = copy_project(tmp_path / "project")
    optuna_search(repo, "tuned", "random", {"finetune.head_lr": "choice(1e-5, 1.0)"}, seed=10)
    result = sh(*TUNE, "sweep.trials=6", cwd=repo)
    assert "database is locked" not in result.stdout + result.stderr
    for db in ("optuna.db", "mlflow.db"):  # WAL: readers do not wait for a committing writer
        assert sqlite3.connect(repo / db).execute("PRAGMA journal_mode").fetchone()[0] == "wal", db

    trials = study(repo, "tuned").trials
    states = [trial.state for trial in trials]
    assert len(trials) == 6 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    assert TrialState.PRUNED in states and len({trial.user_attrs["worker"] for trial in trials}) == 2
    for trial in trials:  # a complete trial reported both epochs, also when it reused the fine-tuning
        epochs = [1] if trial.state == TrialState.PRUNED else [1, 2]  # pruned after its first
        assert list(trial.intermediate_values) == epochs
        assert trial.params["finetune.head_lr"] == (1.0 if trial.state == TrialState.PRUNED else 1e-5)
    [sweep] = sweeps(repo, "sweep.trials=6")
    assert sweep.info.status == "FINISHED" and sweep.data.tags["optuna.study"] == "tuned"
    runs = {int(run.data.tags["optuna.trial"]): run for run in children(repo, sweep)}
    assert sorted(runs) == list(range(6))  # one run per trial, none lost
    status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}
    for trial in trials:
        run = runs[trial.number]
        assert (run.data.tags["optuna.state"], run.info.status) == (trial.state.name, status[trial.state])
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        stages = {stage_of(child): child.info.status for child in children(repo, run)}
        if trial.state == TrialState.PRUNED:  # its fine-tuning stopped too
            assert stages["finetune"] == "KILLED"
        else:  # a repeated config reuses the fine-tuning of the first: no stage runs
            assert set(stages.values()) <= {"FINISHED"}
    assert sweep.data.metrics["best_validation_loss"] == study(repo, "tuned").best_value
    assert sweep.data.metrics["trials_pruned"] == states.count(TrialState.PRUNED)

    # A worker killed in the middle of a trial left it RUNNING: the rerun marks it FAIL, then
    # tops the study up to 8 finished trials with 2 more.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = study(repo, "tuned").ask()
    left.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    sh(*TUNE, "sweep.trials=8", cwd=repo)
    trials = study(repo, "tuned").trials
    assert trials[left.number].state == TrialState.FAIL
    new = [trial.number for trial in trials if trial.number > left.number]
    assert len(new) == 2 and all(trials[n].state in (TrialState.COMPLETE, TrialState.PRUNED) for n in new)
    [rerun] = sweeps(repo, "sweep.trials=8")
    assert sorted(int(run.data.tags["optuna.trial"]) for run in children(repo, rerun)) == new
    assert rerun.info.status == "FINISHED"
