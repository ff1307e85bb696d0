"""The worker processes of `transferlab tune` (transferlab.tuning): each one runs `study.optimize`
in a process group of its own, so that Ctrl-C reaches it once, from the parent (`stop`)."""

from __future__ import annotations

import logging
import os

from transferlab import optuna_study
from transferlab.interrupts import install as install_interrupt_handler
from transferlab.interrupts import interrupts
from transferlab.tracking.processes import process_id


def stop(processes) -> None:
    """After Ctrl-C or an error here: each worker gets one SIGINT from here (they are in their own
    process group, so a terminal's Ctrl-C reaches only this process), ends its running trial as
    FAIL and exits; one still alive after 60 s is killed. Before, a worker that the signal had not
    reached went on starting trials for the 10 s this waited first."""
    import signal

    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()


def work(overrides: list[str], sweep_run_id: str | None, seed_offset: int) -> None:
    """One worker process: `study.optimize` until the study has sweep.trials finished trials; exit
    code 130 without a traceback on Ctrl-C (it was multiprocessing's 40-line one)."""
    import sys

    os.setpgrp()  # Ctrl-C comes from the parent only, once (a second one would not be deferred)
    logging.getLogger("optuna.study._optimize").addFilter(interrupted_trial_in_one_line)
    install_interrupt_handler()  # a Ctrl-C that training swallows still stops the worker
    watch_parent()
    try:
        optimize(overrides, sweep_run_id, seed_offset)
    except KeyboardInterrupt:
        sys.exit(130)
    if interrupts:
        sys.exit(130)


def interrupted_trial_in_one_line(record: logging.LogRecord) -> bool:
    """Optuna logs a trial that Ctrl-C ended with the whole traceback; one line says it instead."""
    if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
        trial = record.getMessage().split(" failed ", 1)[0]
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"{trial} interrupted (FAIL)",
            (),
            None,
            None,
        )
    return True


def watch_parent() -> None:
    """Out of the terminal's process group, a worker whose parent died gets a Ctrl-C of its own."""
    import signal
    import threading
    import time

    parent, main = os.getppid(), threading.main_thread().ident

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def optimize(overrides: list[str], sweep_run_id: str | None, seed_offset: int) -> None:
    from functools import partial

    from transferlab.config.load import job_config
    from transferlab.sweep import own_process
    from transferlab.tuning_trials import Slots, run_trial

    line = f"%(asctime)s {process_id()} %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S", format=line)
    own_process()
    optuna_study.quiet_deprecations()
    raw = optuna_study.compose(overrides)
    cfg = job_config(raw)
    space, fixed = optuna_study.search_space(raw)
    pruner = optuna_study.pruner(cfg.sweep.pruner)
    study = optuna_study.open_study(raw, cfg, sampler=optuna_study.sampler(raw, seed_offset), pruner=pruner)
    slots = Slots(cfg.sweep.trials, raw.hydra.sweeper.storage, study.study_name)
    if slots.take(study):
        objective = partial(
            run_trial, slots=slots, overrides=[*overrides, *fixed], space=space, sweep_run_id=sweep_run_id
        )
        study.optimize(objective, callbacks=[slots.after], catch=(Exception,))
