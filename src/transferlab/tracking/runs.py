"""The run API stages log through: `stage_run` (one stage execution, the active MLflow run) and
`open_run`/`close_run` (sweeps and pipelines: runs that stay inactive and parent the stage runs)."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from transferlab.pipeline import stage_names
from transferlab.tracking.identity import flatten, masked, run_identity, run_name
from transferlab.tracking.lineage import fingerprint, latest_stage_run
from transferlab.tracking.processes import PROCESS_TAG, process_id
from transferlab.tracking.store import answering, open_store, retried_on_collision, server_gone, tracking_uri

log = logging.getLogger(__name__)
PARENT_ENV = "TRANSFERLAB_PARENT_RUN_ID"  # set by `transferlab run` for the stages `dvc repro` starts


class StageRun:
    """The handle a stage logs through (one run, by id); a disabled run accepts the same calls and
    drops them."""

    def __init__(self, cfg=None, experiment_id: str | None = None, run_id: str | None = None) -> None:
        self._cfg = cfg
        self.experiment_id = experiment_id
        self.run_id = run_id
        if run_id:
            import mlflow

            self._client = mlflow.MlflowClient()

    def link(self, upstream: str) -> str | None:
        """Tag this run with the run that produced `upstream`'s outputs: found by fingerprint, so it
        is the right run even when DVC skipped the upstream stage (it was up to date)."""
        if not self.run_id:
            return None
        found = latest_stage_run(upstream, fingerprint(self._cfg, upstream), self.experiment_id)
        if found is None:
            log.warning("no finished MLflow run of stage %s with this config: lineage not linked", upstream)
            return None
        self.set_tags({f"lineage.{upstream}_run_id": found.info.run_id})
        return found.info.run_id

    def log_dataset(self, frame, name: str, digest: str, context: str) -> None:
        """Data lineage: the split this stage read, by name and content digest."""
        if self.run_id:
            import mlflow.data
            from mlflow.entities import DatasetInput, InputTag
            from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

            with warnings.catch_warnings():  # the hint that int columns cannot hold NaN: not a model schema
                warnings.filterwarnings("ignore", r".*integer column", UserWarning)
                dataset = mlflow.data.from_pandas(frame, name=name, digest=digest)._to_mlflow_entity()
            entry = DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])
            # Teammates' runs of the same data log the same dataset row, maybe at the same moment.
            retried_on_collision(lambda: self._client.log_inputs(self.run_id, datasets=[entry]))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.run_id:
            self._client.log_text(self.run_id, text, artifact_file)

    def log_table(self, frame, artifact_file: str) -> None:
        """A DataFrame as an MLflow table (shown in the UI's artifact view and evaluation tab)."""
        if self.run_id:
            self._client.log_table(self.run_id, data=frame, artifact_file=artifact_file)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.run_id:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            numeric = [
                Metric(k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))
            ]
            self._client.log_batch(self.run_id, metrics=numeric)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.run_id and Path(path).exists():
            log_fn = self._client.log_artifacts if Path(path).is_dir() else self._client.log_artifact
            log_fn(self.run_id, str(path), folder)

    def set_tags(self, tags: dict) -> None:
        if self.run_id:
            from mlflow.entities import RunTag

            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def link_skipped(self, ran: set[str] | dict, stages: list[str] | None = None) -> None:
        """Tag the runs that made the outputs of every stage (of `stages`, default all) that did not
        run here: DVC skipped it, or a sweep reused it from the stage cache."""
        for stage in stages or stage_names():
            if stage not in ran:
                found = latest_stage_run(stage, fingerprint(self._cfg, stage), self.experiment_id)
                if found is not None:
                    self.set_tags({f"lineage.{stage}_run_id": found.info.run_id})

    def trainer_callback(self):
        """A transformers callback that sends every Trainer log line to this run."""
        from transformers import TrainerCallback

        run = self

        class _LogToRun(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    run.log_metrics(logs, step=state.global_step)

        return _LogToRun()


def _resumable(run_id: str | None, experiment_id: str) -> str | None:
    """`run_id` if it is a live run of this experiment (the run a checkpoint was made in), else None."""
    if not run_id:
        return None
    import mlflow

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        run = None
    if run is None or run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        log.warning(
            "MLflow run %s of the checkpoint is not in experiment %s: logging to a new run",
            run_id,
            experiment_id,
        )
        return None
    return run_id


@contextmanager
def stage_run(stage: str, cfg, *, tags: dict | None = None, resume_run_id: str | None = None):
    """An MLflow run for one stage execution, with the config, git state and versions recorded.
    `resume_run_id`: the run an interrupted attempt of this stage logged to (stored with its
    checkpoint); it is re-opened, so a resumed stage has one run. In a distributed launch only
    rank 0 logs; the other processes get a disabled run."""
    from transferlab.training.runtime import is_main_process

    if not cfg.tracking.enabled or not is_main_process():
        yield StageRun()
        return
    import mlflow
    from omegaconf import OmegaConf

    experiment_id = open_store(cfg)
    config, identity = run_identity(cfg)
    # A pipeline, sweep or job run is the parent; MLFLOW_RUN_ID must not hijack the nesting.
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = os.environ.get(PARENT_ENV) or None
    resumed = _resumable(resume_run_id, experiment_id)
    uri = tracking_uri(cfg)
    with (
        answering(uri, f"the {stage} stage"),
        mlflow.start_run(
            run_id=resumed,
            run_name=None if resumed else run_name(stage, cfg),
            parent_run_id=None if resumed else parent,
            log_system_metrics=True,
        ) as active,
        _captured_log() as stage_log,
    ):
        if resumed:  # its params and tags are there from the first attempt (same config: same key)
            mlflow.set_tags({PROCESS_TAG: process_id(), **({"mlflow.parentRunId": parent} if parent else {})})
        else:
            mlflow.log_params(flatten(config))
            mlflow.log_text(OmegaConf.to_yaml(config), "config.yaml")
            mlflow.set_tags(
                {
                    "transferlab.stage": stage,
                    "transferlab.fingerprint": fingerprint(cfg, stage),
                    **identity,
                    **{k: str(v) for k, v in (tags or {}).items()},
                }
            )
        log.info(
            "MLflow run %s (%s%s) in %s",
            active.info.run_id,
            stage,
            ", resumed" if resumed else "",
            masked(uri),
        )
        failure = None
        try:
            yield StageRun(cfg, experiment_id, active.info.run_id)
        except BaseException as err:
            failure = err
            raise
        finally:
            if not server_gone(failure, uri):  # else one more request would wait out the retries
                mlflow.log_artifact(str(stage_log), "logs")


def open_run(
    cfg, name: str, *, parent: str | None = None, tags: dict | None = None, title: str | None = None
) -> StageRun:
    """A run that is not made active (sweeps and their jobs: stage runs start inside them, maybe in
    the same process), with the config and identity tags; end it with `close_run`. `name` gives the
    `transferlab.stage` tag (its part before a `-`), `title` the run's name (default: `name`)."""
    if not cfg.tracking.enabled:
        return StageRun()
    import mlflow
    from mlflow.entities import Param
    from omegaconf import OmegaConf

    experiment_id = open_store(cfg)
    config, identity = run_identity(cfg)
    all_tags = {"transferlab.stage": name.split("-")[0], **identity, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    client = mlflow.MlflowClient()
    created = client.create_run(
        experiment_id, run_name=title or name, tags={k: str(v) for k, v in all_tags.items()}
    )
    run = StageRun(cfg, experiment_id, created.info.run_id)
    client.log_batch(run.run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(config).items()])
    run.log_text(OmegaConf.to_yaml(config), "config.yaml")
    return run


def reopen_run(cfg, parent: str | None, key: str, value) -> StageRun | None:
    """The run under `parent` tagged `key` = `value`, set back to RUNNING, or None: a job that Slurm
    requeued carries on in the run its first attempt opened rather than a second one."""
    if not (cfg.tracking.enabled and parent):
        return None
    import mlflow

    experiment_id = open_store(cfg)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{key}` = '{value}'", max_results=1
    )
    if not found:
        return None
    run_id = found[0].info.run_id  # this process's tag first: RUNNING with a dead one is an orphan
    client.set_tag(run_id, PROCESS_TAG, process_id())
    client.update_run(run_id, status="RUNNING")
    log.info("requeued: carrying on in MLflow run %s", run_id)
    return StageRun(cfg, experiment_id, run_id)


def close_run(run: StageRun, *, failed: bool = False) -> None:
    if run.run_id:
        import mlflow

        status = "FAILED" if failed else "FINISHED"
        try:
            mlflow.MlflowClient().set_terminated(run.run_id, status)
        except mlflow.exceptions.MlflowException as error:  # the store went away: say what stays open
            log.warning(
                "MLflow run %s could not be marked %s; it shows RUNNING: %s", run.run_id, status, error
            )


def child_runs(run: StageRun) -> list:
    """The runs directly under `run`."""
    if not run.run_id:
        return []
    import mlflow

    return mlflow.MlflowClient().search_runs(
        [run.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.run_id}'"
    )


@contextmanager
def nested_under(run: StageRun):
    """Stage runs started inside this block become children of `run`."""
    previous = os.environ.get(PARENT_ENV)
    if run.run_id:
        os.environ[PARENT_ENV] = run.run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous


@contextmanager
def _captured_log():
    """The stage's log lines (this package's and the libraries') in a file, for the run's artifacts."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="transferlab-log-") as folder:
        path = Path(folder) / "stage.log"
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield path
        finally:
            root.removeHandler(handler)
            handler.close()
