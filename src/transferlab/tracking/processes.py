"""Runs a dead process left RUNNING. A stage killed outright (SIGKILL, the OOM killer, a lost
node) or one whose tracking server was down when it ended cannot close its run, and MLflow shows
such a run RUNNING for ever. Every run records the process that logs to it (`transferlab.process`,
`host:pid`); opening the store closes, as FAILED, the RUNNING runs of its experiment whose process
was on this machine and has ended. Another machine's runs are that machine's to judge."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
PROCESS_TAG = "transferlab.process"


def process_id() -> str:
    """This process as `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ended_here(process: str) -> bool:
    """Whether `process` (`host:pid`) ran on this machine and has ended."""
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def close_orphans(experiment_id: str) -> None:
    """Mark FAILED the experiment's RUNNING runs whose process on this machine has ended. Housekeeping:
    a store that refuses the search or the update leaves them as they are."""
    import mlflow

    client = mlflow.MlflowClient()
    query = f"attributes.status = 'RUNNING' and tags.`{PROCESS_TAG}` LIKE '{socket.gethostname()}:%'"
    try:
        for run in client.search_runs([experiment_id], query, max_results=1000):
            process = run.data.tags[PROCESS_TAG]
            if ended_here(process):
                client.set_terminated(run.info.run_id, "FAILED")
                log.warning(
                    "MLflow run %s (%s) was left RUNNING by process %s, which has ended: marked FAILED",
                    run.info.run_id,
                    run.info.run_name,
                    process,
                )
    except mlflow.exceptions.MlflowException as err:
        log.debug("runs left RUNNING not checked: %s", err)
