"""`transferlab tune [--workers N] [overrides]`: N Optuna worker processes on one study.

The study, its search space and sampler are the Hydra Optuna sweeper's (`hydra.sweeper.*` of
hparams_search=..., default finetune_optuna; read by optuna_study), its storage shared by every
worker: a database URL (sqlite:///optuna.db by default, or a PostgreSQL server) or a journal
file. Each worker runs `study.optimize`: it asks a trial as soon as its last one ended, runs the
stages in-process as a sweep job does (sweep.run_stages: prepare and train from the stage cache),
and the fine-tuning reports sweep.objective after every epoch to the trial, so the pruner
(sweep.pruner) can stop it.
Workers stop when the study has sweep.trials finished (COMPLETE or PRUNED) trials, so running the
command again resumes it. In MLflow: one `sweep` run, a `trial-N` child per trial (pruned: KILLED).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from transferlab import optuna_study, study_config
from transferlab.errors import UserError
from transferlab.interrupts import interrupts

log = logging.getLogger(__name__)
SEARCH = "hparams_search=finetune_optuna"  # the search space unless the overrides pick one
FAILED_IN_A_ROW = 3  # a worker stops after this many failed trials in a row (a broken config)
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}  # MLflow status of a trial's run


def tune(overrides: list[str], workers: int = 1) -> int:
    """Start `workers` processes on the study and wait for them; record the study's best trial on
    the sweep run. Fails (UserError) when the study ended short of sweep.trials finished trials."""
    import multiprocessing

    from transferlab import tuning_workers
    from transferlab.pipeline import WORKSPACE_ENV
    from transferlab.sweep import job_config
    from transferlab.tracking import close_run, masked, open_run

    if workers < 1:
        raise UserError(f"--workers {workers}: at least one worker")
    if not Path("conf/config.yaml").is_file():
        raise UserError("conf/config.yaml not found: run it from the project root")
    os.environ.setdefault(WORKSPACE_ENV, str(Path.cwd()))  # stages read dvc.yaml from here
    if not any(o.startswith(("hparams_search=", "+hparams_search=")) for o in overrides):
        overrides = [SEARCH, *overrides]
    optuna_study.quiet_deprecations()
    raw = optuna_study.compose(overrides)
    cfg = job_config(raw)
    optuna_study.pruner(cfg.sweep.pruner)  # its settings fail here, not in every worker
    study = optuna_study.open_study(raw, cfg)
    space = optuna_study.search_space(raw)[0]
    study_config.check(study, cfg, space)  # a study holds one config's trials
    optuna_study.check_space(study, space)  # before any trial fails on it
    optuna_study.fail_unfinished(study, abandoned=optuna_study.worker_gone)
    target, done = cfg.sweep.trials, optuna_study.finished(study)
    log.info("study %s: %d of %d trials finished, %d workers", study.study_name, done, target, workers)
    if done >= target:
        return 0
    os.environ.pop("MLFLOW_RUN_ID", None)
    sweep = open_run(
        cfg,
        "sweep",
        tags={
            "sweep.arguments": " ".join(overrides),
            "sweep.sweeper": "transferlab tune (optuna)",
            "sweep.launcher": f"{workers} worker processes",
            "sweep.objective": cfg.sweep.objective,
            "sweep.direction": cfg.sweep.direction,
            "optuna.study": study.study_name,
            "optuna.storage": masked(raw.hydra.sweeper.storage),
            "optuna.pruner": cfg.sweep.pruner.kind,
        },
    )
    # Each worker seeds its sampler apart, and a rerun apart from the runs before it.
    first_seed = optuna_study.seed_offset(study)
    # The cores shared out (torch takes them all in each process), unless runtime.threads says.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(
            target=tuning_workers.work, args=(overrides, sweep.run_id, first_seed + i), name=f"worker-{i}"
        )
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        done = summarize(sweep, study, cfg)
    except BaseException:
        tuning_workers.stop(processes)
        close_run(sweep, failed=True)
        raise
    close_run(sweep, failed=done < target)
    if done < target:
        raise UserError(
            f"study {study.study_name}: {done} of {target} trials finished (failed trials and "
            "worker errors are above): run the same command again to resume it"
        )
    return 0


def run_trial(trial, *, slots, overrides, space, sweep_run_id) -> float:
    """One trial: the stages under a `trial-N` MLflow run, the finetune stage reporting each epoch."""
    import optuna

    from transferlab.config.compose import compose as compose_pipeline
    from transferlab.sweep import job_config, run_stages
    from transferlab.tracking import open_run
    from transferlab.training.callbacks import reporting_to

    slots.started()
    trial.set_user_attr("worker", optuna_study.worker_id())
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
            "optuna.worker": optuna_study.worker_id(),
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


def summarize(sweep, study, cfg) -> int:
    """Trial counts and the study's best trial on the sweep run; returns the finished trials."""
    from optuna.trial import TrialState

    from transferlab.tracking import child_runs

    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    sweep.log_metrics(
        {
            "jobs": len(child_runs(sweep)),
            "trials_complete": count[TrialState.COMPLETE],
            "trials_pruned": count[TrialState.PRUNED],
            "trials_failed": count[TrialState.FAIL],
        }
    )
    if count[TrialState.COMPLETE]:
        best = study.best_trial
        sweep.log_metrics({cfg.sweep.objective: best.value})
        sweep.set_tags(
            {
                "sweep.best_trial": best.number,
                "sweep.best_run_id": best.user_attrs.get("mlflow_run_id"),
                "sweep.best_overrides": " ".join(f"{k}={v}" for k, v in best.params.items()),
            }
        )
        log.info(
            "study %s: best %s = %s with %s", study.study_name, cfg.sweep.objective, best.value, best.params
        )
    return optuna_study.finished(study)
