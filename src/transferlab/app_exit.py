"""How `python -m transferlab` (the Hydra app, transferlab.sweep) ends when it does not succeed, as
the console script does: a problem the user can fix is one `python -m transferlab: error: ...` line
and exit code 2 (a job's user error, an override Hydra cannot apply or convert, an Optuna storage
that cannot be opened, Slurm jobs sbatch could not submit, a study no trial of which completed);
Ctrl-C is one line and exit code 130. Other errors keep Hydra's report (its full traceback with
HYDRA_FULL_ERROR=1)."""

from __future__ import annotations

import os
import sys

from transferlab import optuna_study
from transferlab.errors import UserError
from transferlab.interrupts import interrupts

PROGRAM = "python -m transferlab"


def run(app, *, finish, study: dict) -> None:
    """Run the Hydra app `app`; `finish(failed=True)` closes a sweep run it left open (before the
    last line, which ends the output); `study` is the Optuna sweep's (name, storage), if any."""
    tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked for Hydra's full ones
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises a failed sweep's error here, not prints it
    try:
        app()
    except KeyboardInterrupt:  # not an Exception: before, Python printed its traceback, exit code 1
        finish(failed=True)
        interrupted()
    except Exception as err:
        if (message := error_line(err, study)) is None and tracebacks:
            raise
        if message is None:  # as Hydra reports it, exit code 1
            from functools import partial

            from hydra._internal.utils import run_and_report

            del os.environ["HYDRA_FULL_ERROR"]
            run_and_report(partial(raise_from_job, err))
        finish(failed=True)  # its record logged before the error line
        fail(message)
    finally:
        finish(failed=True)  # only when the sweep ended without on_multirun_end
    if interrupts:  # a Ctrl-C that a job swallowed (see transferlab.interrupts)
        interrupted()


def fail(message: str):
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    sys.exit(2)


def interrupted():
    print(f"{PROGRAM}: interrupted", file=sys.stderr)
    sys.exit(130)


def error_line(err: Exception, study: dict) -> str | None:
    """The one line a run or sweep ends with: a job's user error (the basic sweeper stops at it;
    Optuna's records a FAIL trial), a study no trial of which completed (the sweeper fails on its
    best), or a config Hydra cannot compose for a job (an unknown key, a value of the wrong type)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from transferlab.config.compose import one_line

    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, ValueError) and study and optuna_study.none_completed(**study):
        return f"study {study['name']}: no trial completed (their errors are above)"
    if in_job(err):
        return None
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return f"cannot compose config: {one_line(err)}"
    if type(err).__module__.startswith("submitit") and type(err).__name__ == "FailedJobError":
        return f"the Slurm launcher could not submit the jobs: {submission_error(str(err))}"
    return None


def submission_error(stderr: str) -> str:
    """sbatch's reason (its fatal line, else its last) and what to check."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()] or ["sbatch failed"]
    reason = next((line for line in lines if "fatal:" in line), lines[-1])
    return (
        f"{reason} (no Slurm controller answers here: run the sweep on a cluster's login node, "
        "or pick another hydra/launcher; docs/cluster.md)"
    )


def in_job(err: Exception) -> bool:
    """Whether `err` was raised by a job (sweep.run_job), not by Hydra composing its config."""
    return job_traceback(err) is not None


def raise_from_job(err: Exception):
    """Raise `err` with its traceback from the job on: Hydra's report shows the task's frames only."""
    raise err.with_traceback(job_traceback(err) or err.__traceback__)


def job_traceback(err: Exception):
    """`err`'s traceback from sweep.run_job's frame on, or None when no job raised it."""
    tb = err.__traceback__
    while tb is not None and not (
        tb.tb_frame.f_code.co_name == "run_job"
        and tb.tb_frame.f_globals.get("__name__") == "transferlab.sweep"
    ):
        tb = tb.tb_next
    return tb
