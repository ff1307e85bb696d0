"""Everything MLflow: stages call `stage_run(...)` and a few plain methods, never MLflow itself.
One job a module: store (where runs go), identity (what every run records), lineage (which run
made an output), runs (the run API), parent (`transferlab run`'s pipeline run), registry (model
versions and the champion alias), card (the model card a version carries), processes (which
process logs to a run, and the runs a dead one left RUNNING)."""

from transferlab.tracking.identity import SECRET_NAME, URL_PASSWORD, flatten, masked, redact
from transferlab.tracking.lineage import fingerprint, latest_stage_run
from transferlab.tracking.parent import pipeline_run, tag_lock_hashes
from transferlab.tracking.runs import (
    PARENT_ENV,
    StageRun,
    child_runs,
    close_run,
    nested_under,
    open_run,
    reopen_run,
    stage_run,
)
from transferlab.tracking.store import DEFAULT_URI, tracking_uri

__all__ = [
    "DEFAULT_URI",
    "PARENT_ENV",
    "SECRET_NAME",
    "URL_PASSWORD",
    "StageRun",
    "child_runs",
    "close_run",
    "fingerprint",
    "flatten",
    "latest_stage_run",
    "masked",
    "nested_under",
    "open_run",
    "pipeline_run",
    "redact",
    "reopen_run",
    "stage_run",
    "tag_lock_hashes",
    "tracking_uri",
]
