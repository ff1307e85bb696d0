"""One trial of `transferlab tune` (run in a worker process, transferlab.tuning_workers): the
stages under a `trial-N` MLflow run, and the slots that stop the workers at sweep.trials."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from transferlab import optuna_study
from transferlab.interrupts import interrupts
from transferlab.tracking.processes import process_id

log = logging.getLogger(__name__)
FAILED_IN_A_ROW = 3  # a worker stops after this many failed trials in a row (a broken config)
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}  # MLflow status of a trial's run


def run_trial(trial, *, slots, overrides, space, sweep_run_id) -> float:
    """One trial: the stages under a `trial-N` MLflow run, the finetune stage reporting each epoch."""
    import optuna

    from transferlab.config.compose import compose as compose_pipeline
    from transferlab.config.load import job_config
    from transferlab.sweep import run_stages
    from transferlab.tracking import open_run
    from transferlab.training.callbacks import reporting_to

    slots.started()
    trial.set_user_attr("worker", process_id())
    chosen = [
        f"{name}={optuna_study.suggest(trial, name, distribution)}" for name, distribution in space.items()
    ]
    cfg = job_config(compose_pipeline([*overrides, *chosen]))
    run = open_run(
        cfg,
        f"trial-{trial.number}",
        parent=sweep_run_id,
        tags={
            "sweep.overrides": " ".join(chosen),
            "sweep.objective": cfg.sweep.objective,
            "optuna.study": trial.study.study_name,
            "optuna.trial": trial.number,
            "optuna.worker": process_id(),
        },
    )
    state, tags = "FAIL", {}
    try:
        if run.run_id:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        with reporting_to(trial, cfg.sweep.objective):
            metrics, reused = run_stages(cfg, run)
        if "finetune" in reused:  # no epoch ran here: the pruner still gets its curve
            replay(trial, reused["finetune"], cfg.sweep.objective)
        if interrupts:  # a Ctrl-C that training swallowed (a __del__): the trial FAILs, not COMPLETEs
            raise KeyboardInterrupt
        value = float(metrics[cfg.sweep.objective])
        state = "COMPLETE" if math.isfinite(value) else "FAIL"  # Optuna fails a NaN value too
        return value
    except optuna.TrialPruned as pruned:
        state, tags = "PRUNED", {"optuna.pruned": str(pruned)}
        raise
    finally:
        end_run(run, state, tags)


def replay(trial, entry: Path, objective: str) -> None:
    """Report the epochs of a fine-tuning reused from the stage cache, from its training log."""
    import json

    from transferlab.contracts import FINETUNED, TRAINING_LOG
    from transferlab.training.callbacks import objective_so_far

    history = json.loads((entry / FINETUNED / TRAINING_LOG).read_text())
    for end, record in enumerate(history, start=1):
        if "eval_loss" in record:
            trial.report(objective_so_far(history[:end], objective), round(record["epoch"]))


def end_run(run, state: str, tags: dict) -> None:
    """The trial's state as the run's `optuna.state` tag and status; a pruned trial's stopped
    finetune run is KILLED too (not FAILED)."""
    run.set_tags({"optuna.state": state, **tags})
    if run.run_id:
        import mlflow

        from transferlab.tracking import child_runs

        client = mlflow.MlflowClient()
        if state == "PRUNED":
            for child in child_runs(run):
                if child.info.status == "FAILED":
                    client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(run.run_id, STATUS[state])


class Slots:
    """Trials start while the study has fewer than `target` trials finished (COMPLETE or PRUNED) or
    running. Counting and creating the next trial happen under one lock per project folder (taken
    by `take`, released by `started` once the trial exists), so two workers finishing together never
    both start the last trial. Across machines the count is not locked: at most one trial too many
    when two end at the same moment."""

    def __init__(self, target: int, storage: str, study_name: str) -> None:
        import hashlib

        from filelock import FileLock

        name = hashlib.sha256(f"{storage} {study_name}".encode()).hexdigest()[:16]
        folder = Path(".cache/tune")  # in the project, as relative storage paths are
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(folder / f"{name}.lock")
        self.target, self.failed_in_a_row = target, 0

    def take(self, study) -> bool:
        """True: a trial may start, and the lock is held until `started`."""
        from optuna.trial import TrialState

        self.lock.acquire()
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        if len(study.get_trials(deepcopy=False, states=states)) < self.target:
            return True
        self.lock.release()
        return False

    def started(self) -> None:
        self.lock.release()

    def after(self, study, trial) -> None:
        """Optuna callback after each trial: stop when the study is full, or this worker keeps failing."""
        from optuna.trial import TrialState

        self.failed_in_a_row = self.failed_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if interrupts:  # Ctrl-C, which the trial may have swallowed (see interrupts.on_interrupt)
            study.stop()
        elif self.failed_in_a_row >= FAILED_IN_A_ROW:
            log.error("%d trials in a row failed: this worker stops", self.failed_in_a_row)
            study.stop()
        elif not self.take(study):
            study.stop()
