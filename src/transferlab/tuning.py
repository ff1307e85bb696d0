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
import os
from pathlib import Path

from transferlab import optuna_study, study_config
from transferlab.errors import UserError

log = logging.getLogger(__name__)
SEARCH = "hparams_search=finetune_optuna"  # the search space unless the overrides pick one


def tune(overrides: list[str], workers: int = 1) -> int:
    """Start `workers` processes on the study and wait for them; record the study's best trial on
    the sweep run. Fails (UserError) when the study ended short of sweep.trials finished trials."""
    import multiprocessing

    from transferlab import tuning_workers
    from transferlab.config.load import job_config
    from transferlab.pipeline import WORKSPACE_ENV
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
