"""`python -m transferlab [-m] [overrides]`: the Hydra app over the same `conf/` as the pipeline.

Each job runs the DVC stages' own `run(cfg)` functions (prepare -> train -> finetune, and evaluate
when `sweep.evaluate=true`) and returns `sweep.objective`, a validation metric, to the sweeper.
Stage outputs come from `stage_cache` by content hash (data prepared once, the language model
trained once per train config); each job's Hydra folder links the outputs it used. In MLflow a
sweep is a parent run, each job a child, and the stages a job ran are children of the job's run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from transferlab import app_exit, optuna_study
from transferlab.app_exit import fail
from transferlab.config.load import job_config
from transferlab.errors import UserError
from transferlab.interrupts import install as install_interrupt_handler
from transferlab.interrupts import interrupts
from transferlab.pipeline import WORKSPACE_ENV

log = logging.getLogger(__name__)
SWEEP_ENV = "TRANSFERLAB_SWEEP_RUN_ID"  # the sweep's parent run, for jobs in worker processes
_open_sweep: dict = {}  # the running sweep's parent run, closed as FAILED if the sweep dies
_study: dict = {}  # the Optuna sweep's study (name, storage), to explain a sweep no trial completed


def job(raw) -> float:
    """The Hydra task: a user error ends a single run with one line and exit code 2; in a sweep it
    fails the job (Optuna records a FAIL trial) with only the message as its traceback."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return run_job(raw)
    except UserError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise UserError(str(err)) from None
        fail(str(err))


def run_job(raw) -> float:
    """One job: the stages (cached by content hash) under one MLflow run; returns the objective."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from transferlab.tracking import close_run, open_run, reopen_run

    if interrupts:  # an earlier Ctrl-C was swallowed on its way up: stop here, not next trial
        raise KeyboardInterrupt
    hydra = HydraConfig.get()
    cfg = job_config(raw)
    own_process()
    output_dir = Path(hydra.runtime.output_dir)
    number = hydra.job.num if hydra.mode == RunMode.MULTIRUN else 0  # unset outside multirun
    name = f"job-{number}" if hydra.mode == RunMode.MULTIRUN else "job"
    overrides = " ".join(hydra.overrides.task) or "(defaults)"
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = os.environ.get(SWEEP_ENV)
    requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0  # Slurm requeued this job
    run = (requeued and reopen_run(cfg, parent, "hydra.job.num", number)) or open_run(
        cfg,
        name,
        parent=parent,
        tags={
            "sweep.overrides": overrides,
            "sweep.objective": cfg.sweep.objective,
            "hydra.output_dir": output_dir,
            "hydra.job.num": number,
        },
    )
    try:
        value = float(run_stages(cfg, run, output_dir)[0][cfg.sweep.objective])
    except BaseException:
        close_run(run, failed=True)
        raise
    close_run(run, failed=not math.isfinite(value))
    log.info("%s [%s]: %s = %s", name, overrides, cfg.sweep.objective, value)
    return value


def run_stages(cfg, run, output_dir: Path | None = None) -> tuple[dict, dict[str, Path]]:
    """The stages of one job or trial, each from the stage cache or run there as a child of `run`
    (a reused one is linked by its lineage tag), their outputs linked into `output_dir`. Returns
    finetune's metrics, also logged on `run`, and the cache entries of the stages reused."""
    from transferlab import stage_cache
    from transferlab.contracts import FINETUNE_METRICS as METRICS
    from transferlab.pipeline import outputs, stage_names
    from transferlab.tracking import nested_under

    stages = [stage for stage in stage_names() if stage != "evaluate" or cfg.sweep.evaluate]
    entries, ran = {}, set()
    with nested_under(run):
        for stage in stages:
            entries[stage], fresh = stage_cache.run(stage, cfg, dict(entries))
            ran.update([stage] if fresh else [])
            if output_dir is not None:
                stage_cache.link_outputs(output_dir, entries[stage], outputs(stage))
    run.link_skipped(ran, stages)
    metrics = json.loads((entries["finetune"] / METRICS).read_text())
    run.log_metrics(metrics)
    run.set_tags({"stages.ran": ",".join(sorted(ran)) or "none (all reused)"})
    return metrics, {stage: entry for stage, entry in entries.items() if stage not in ran}


def own_process() -> None:
    """A job in a parallel launcher's worker (joblib/loky, `transferlab tune`) trains like a main
    process: transformers' seeded collators take any process not named MainProcess for a DataLoader
    worker and refuse to seed, which failed every joblib job that had to train the language model."""
    import multiprocessing

    multiprocessing.current_process().name = "MainProcess"


class SweepRunCallback(Callback):
    """Hydra callback (conf/config.yaml): one parent MLflow run per multirun, the best job on it."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from transferlab.tracking import open_run

        cfg = job_config(config)
        _study.clear()
        if config.hydra.sweeper.get("storage") and "params" in config.hydra.sweeper:  # an Optuna study
            _study.update(name=config.hydra.sweeper.study_name, storage=config.hydra.sweeper.storage)
            try:
                if not optuna_study.prepare_sweep(config):
                    return  # as `transferlab tune`: no sweep run when nothing runs
            except UserError as err:  # raised, it would be a warning (Hydra's callbacks)
                fail(str(err))
        arguments = [
            *(o for o in config.hydra.overrides.hydra if not o.startswith("hydra.mode=")),
            *config.hydra.overrides.task,
        ]
        os.environ.pop("MLFLOW_RUN_ID", None)
        run = open_run(
            cfg,
            "sweep",
            tags={
                "sweep.arguments": " ".join(arguments) or "(none)",
                "sweep.sweeper": config.hydra.sweeper._target_,
                "sweep.launcher": config.hydra.launcher._target_,
                "sweep.dir": config.hydra.sweep.dir,
                "sweep.objective": cfg.sweep.objective,
                "sweep.direction": cfg.sweep.direction,
            },
        )
        if run.run_id:
            os.environ[SWEEP_ENV] = run.run_id
            _open_sweep.update(
                run=run, cfg=cfg, sweep_dir=Path(config.hydra.sweep.dir), hydra_yaml=_to_yaml(config)
            )

    def on_multirun_end(self, config, **kwargs) -> None:
        finish_sweep(failed=bool(interrupts))


def _to_yaml(config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(config)


def finish_sweep(*, failed: bool) -> None:
    """Record the best job and the sweep's files on the parent run, then close it (FAILED if the sweep
    failed or no job scored), even when the record fails: a sweep left RUNNING looks alive for ever."""
    if not _open_sweep:
        return
    from transferlab.tracking import close_run

    run, cfg, sweep_dir, hydra_yaml = (_open_sweep[k] for k in ("run", "cfg", "sweep_dir", "hydra_yaml"))
    _open_sweep.clear()
    os.environ.pop(SWEEP_ENV, None)
    scored = False
    try:
        scored = record_sweep(run, cfg, sweep_dir, hydra_yaml)
    except Exception as error:  # closed all the same, the reason logged
        log.warning("sweep: could not record the best job on MLflow run %s: %s", run.run_id, error)
    finally:
        close_run(run, failed=failed or not scored)


def record_sweep(run, cfg, sweep_dir: Path, hydra_yaml: str) -> bool:
    """The best job (by sweep.objective), job counts and sweep files on the parent run; any scored?"""
    from transferlab.tracking import child_runs

    objective = cfg.sweep.objective
    # Ties go to the lowest job number, as Optuna's best trial does.
    jobs = sorted(child_runs(run), key=lambda job: int(job.data.tags.get("hydra.job.num", 0)))
    scored = [
        job
        for job in jobs
        if job.info.status == "FINISHED" and math.isfinite(job.data.metrics.get(objective, math.nan))
    ]
    if scored:
        pick = max if cfg.sweep.direction == "maximize" else min
        best = pick(scored, key=lambda job: job.data.metrics[objective])
        run.log_metrics({objective: best.data.metrics[objective]})
        run.set_tags(
            {
                "sweep.best_run_id": best.info.run_id,
                "sweep.best_overrides": best.data.tags.get("sweep.overrides", ""),
            }
        )
        log.info(
            "sweep: best %s = %s with %s",
            objective,
            best.data.metrics[objective],
            best.data.tags.get("sweep.overrides"),
        )
    run.log_metrics({"jobs": len(jobs), "jobs_failed": len(jobs) - len(scored)})
    if (sweep_dir / "multirun.yaml").is_file():  # the basic sweeper writes it, Optuna's does not
        run.log_artifact(sweep_dir / "multirun.yaml")
    else:
        run.log_text(hydra_yaml, "multirun.yaml")
    if (sweep_dir / "optimization_results.yaml").is_file():  # Optuna's best params and value
        run.log_artifact(sweep_dir / "optimization_results.yaml")
    return bool(scored)


def main() -> None:
    import warnings

    import hydra
    from hydra._internal.utils import get_args_parser
    from omegaconf import OmegaConf

    from transferlab.config.compose import syntax_problem
    from transferlab.config.schema import register

    if not (Path.cwd() / "conf" / "config.yaml").is_file():
        sys.exit("python -m transferlab: error: conf/config.yaml not found: run it from the project root")
    register()
    if problem := syntax_problem(get_args_parser().parse_known_args()[0].overrides):
        fail(problem)
    # hydra-optuna-sweeper 1.3 builds distributions that optuna 5 calls deprecated; nothing to act on.
    warnings.filterwarnings("ignore", r".*Distribution has been deprecated", FutureWarning)
    OmegaConf.register_new_resolver("sweep_trials", optuna_study.trials_to_run, replace=True)
    # Stages read dvc.yaml and the code from here, whatever directory they run in.
    os.environ.setdefault(WORKSPACE_ENV, str(Path.cwd()))
    app = hydra.main(config_path=str(Path.cwd() / "conf"), config_name="config", version_base="1.3")(job)
    install_interrupt_handler()
    app_exit.run(app, finish=finish_sweep, study=_study)
