"""Everything MLflow: stages call `stage_run(...)` and a few plain methods, never MLflow itself."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

from transferlab.errors import UserError
from transferlab.pipeline import project_root, stage_names, stage_params

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_ENV = "TRANSFERLAB_PARENT_RUN_ID"  # set by `transferlab run` for the stages `dvc repro` starts


def tracking_uri(cfg) -> str:
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    # A relative sqlite path names the project's store wherever a stage runs: in a sweep's stage
    # cache or in a `dvc exp run --queue` workspace that DVC deletes afterwards.
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(project_root() / uri[len(prefix):])
    return uri


def _check_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, instead of MLflow's long retry loop."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"MLflow tracking server {masked(uri)} is unreachable ({reason}): start it, fix "
            "MLFLOW_TRACKING_URI / tracking.uri, or set tracking.enabled=false"
        ) from None


def _open_store(cfg) -> str:
    """Point MLflow at the configured store and experiment (its id is returned), or fail with one
    clear message."""
    import mlflow

    uri = tracking_uri(cfg)
    _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = cfg.tracking.experiment
    try:
        with _store_lock(uri):
            if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(name) is None:
                # Artifacts next to the store, not under whichever directory the first run started in.
                location = (project_root() / "mlruns" / name).as_uri()
                mlflow.create_experiment(name, artifact_location=location)
            return mlflow.set_experiment(name).experiment_id
    except Exception as err:  # a bad store URI or an unreadable store
        raise UserError(f"cannot open MLflow tracking store {masked(uri)}: {err}") from None


@contextmanager
def _store_lock(uri: str):
    """Processes that open one sqlite store at the same time (parallel sweep jobs, DVC queue
    workers) take turns: a new store's schema is created by whoever comes first, once."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    from filelock import FileLock

    with FileLock(uri[len(prefix):] + ".lock", timeout=120):
        yield


def _git_tags() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
        except OSError:
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    # Outputs that DVC or MLflow write are ignored by git, so "dirty" means the code or config.
    return {"git.commit": commit, "git.dirty": str(bool(git("status", "--porcelain")))}


def _dvc_tags() -> dict[str, str]:
    """The DVC experiment a stage runs in, when `dvc exp run` started it (DVC sets these)."""
    names = {"DVC_EXP_NAME": "dvc.experiment", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def _version_tags() -> dict[str, str]:
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for package in ("transferlab", "torch", "transformers", "accelerate", "datasets", "mlflow",
                    "dvc", "hydra-core", "scikit-learn"):
        with suppress(PackageNotFoundError):
            tags[f"version.{package}"] = version(package)
    return tags


SECRET_NAME = re.compile(r"(?i)(token|secret|passw|api[_-]?key|access[_-]?key|credential|private[_-]?key)")


URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")


def redact(tree: dict) -> dict:
    """A copy of a config tree with every value whose key looks like a secret replaced, and
    passwords inside URLs (http://user:password@host) masked."""

    def clean(key, value):
        if isinstance(value, dict):
            return redact(value)
        if SECRET_NAME.search(str(key)):
            return "<redacted>"
        return masked(value) if isinstance(value, str) else value

    return {key: clean(key, value) for key, value in tree.items()}


def masked(text: str) -> str:
    return URL_PASSWORD.sub(r"\1<redacted>@", text)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def fingerprint(cfg, stage: str) -> str:
    """A digest of the config that determines `stage`'s outputs (its params and its upstream ones).

    Runs that DVC later restores from its cache carry the same fingerprint, so a report can find
    the MLflow run that produced an output without re-running anything."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    keys = stage_params(stage) or [k for k in config if k != "tracking"]
    selected = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        selected[key] = node
    return hashlib.sha256(json.dumps(selected, sort_keys=True).encode()).hexdigest()[:16]


def latest_stage_run(stage: str, digest: str, experiment_id: str):
    """The newest finished run of `stage` with this fingerprint, or None."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id], max_results=1, output_format="list",
        filter_string=(f"tags.`transferlab.stage` = '{stage}' and "
                       f"tags.`transferlab.fingerprint` = '{digest}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


class StageRun:
    """The handle a stage logs through (one run, by id); a disabled run accepts the same calls and
    drops them."""

    def __init__(self, cfg=None, experiment_id: str | None = None, run_id: str | None = None) -> None:
        self._cfg = cfg
        self._experiment_id = experiment_id
        self.run_id = run_id
        if run_id:
            import mlflow

            self._client = mlflow.MlflowClient()

    def link(self, upstream: str) -> str | None:
        """Tag this run with the run that produced `upstream`'s outputs: found by fingerprint, so it
        is the right run even when DVC skipped the upstream stage (it was up to date)."""
        if not self.run_id:
            return None
        found = latest_stage_run(upstream, fingerprint(self._cfg, upstream), self._experiment_id)
        if found is None:
            log.warning("no finished MLflow run of stage %s with this config: lineage not linked", upstream)
            return None
        self.set_tags({f"lineage.{upstream}_run_id": found.info.run_id})
        return found.info.run_id

    def log_dataset(self, frame, name: str, digest: str, context: str) -> None:
        """Data lineage: the split this stage read, by name and content digest (active run only)."""
        if self.run_id:
            import mlflow
            import mlflow.data

            with warnings.catch_warnings():  # the hint that int columns cannot hold NaN: not a model schema
                warnings.filterwarnings("ignore", r".*integer column", UserWarning)
                dataset = mlflow.data.from_pandas(frame, name=name, digest=digest)
                mlflow.log_input(dataset, context=context)

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
            numeric = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                       if isinstance(v, (int, float))]
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
                found = latest_stage_run(stage, fingerprint(self._cfg, stage), self._experiment_id)
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


def _run_identity(cfg) -> tuple[dict, dict]:
    """A run's flattened (redacted) config params and the tags every run carries."""
    from omegaconf import OmegaConf

    config = redact(OmegaConf.to_container(cfg, resolve=True))
    return config, {**_git_tags(), **_dvc_tags(), **_version_tags()}


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
        log.warning("MLflow run %s of the checkpoint is not in experiment %s: logging to a new run",
                    run_id, experiment_id)
        return None
    return run_id


@contextmanager
def stage_run(stage: str, cfg, *, tags: dict | None = None, resume_run_id: str | None = None):
    """An MLflow run for one stage execution, with the config, git state and versions recorded.
    `resume_run_id`: the run an interrupted attempt of this stage logged to (stored with its
    checkpoint); it is re-opened, so a resumed stage has one run. In a distributed launch only
    rank 0 logs; the other processes get a disabled run."""
    from transferlab.runtime import is_main_process

    if not cfg.tracking.enabled or not is_main_process():
        yield StageRun()
        return
    import mlflow
    from omegaconf import OmegaConf

    experiment_id = _open_store(cfg)
    config, identity = _run_identity(cfg)
    # A pipeline, sweep or job run is the parent; MLFLOW_RUN_ID must not hijack the nesting.
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = os.environ.get(PARENT_ENV) or None
    resumed = _resumable(resume_run_id, experiment_id)
    with mlflow.start_run(run_id=resumed, run_name=None if resumed else stage, parent_run_id=None if resumed
                          else parent, log_system_metrics=True) as active, _captured_log() as stage_log:
        if resumed:  # its params and tags are there from the first attempt (same config: same key)
            mlflow.set_tags({"mlflow.parentRunId": parent} if parent else {})
        else:
            mlflow.log_params(flatten(config))
            mlflow.log_text(OmegaConf.to_yaml(config), "config.yaml")
            mlflow.set_tags({"transferlab.stage": stage, "transferlab.fingerprint": fingerprint(cfg, stage),
                             **identity, **{k: str(v) for k, v in (tags or {}).items()}})
        log.info("MLflow run %s (%s%s) in %s", active.info.run_id, stage, ", resumed" if resumed else "",
                 masked(tracking_uri(cfg)))
        try:
            yield StageRun(cfg, experiment_id, active.info.run_id)
        finally:
            mlflow.log_artifact(str(stage_log), "logs")


def open_run(cfg, name: str, *, parent: str | None = None, tags: dict | None = None) -> StageRun:
    """A run that is not made active (sweeps and their jobs: stage runs start inside them, maybe in
    the same process), with the config and identity tags; end it with `close_run`."""
    if not cfg.tracking.enabled:
        return StageRun()
    import mlflow
    from omegaconf import OmegaConf

    experiment_id = _open_store(cfg)
    config, identity = _run_identity(cfg)
    all_tags = {"transferlab.stage": name.split("-")[0], **identity, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    client = mlflow.MlflowClient()
    created = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    run = StageRun(cfg, experiment_id, created.info.run_id)
    from mlflow.entities import Param

    client.log_batch(run.run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(config).items()])
    run.log_text(OmegaConf.to_yaml(config), "config.yaml")
    return run


def close_run(run: StageRun, *, failed: bool = False) -> None:
    if run.run_id:
        import mlflow

        status = "FAILED" if failed else "FINISHED"
        with suppress(mlflow.exceptions.MlflowException):  # the store went away: nothing to close
            mlflow.MlflowClient().set_terminated(run.run_id, status)


def child_runs(run: StageRun) -> list:
    """The runs directly under `run`."""
    if not run.run_id:
        return []
    import mlflow

    return mlflow.MlflowClient().search_runs(
        [run._experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.run_id}'")


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


def pipeline_run(cfg, command: list[str]) -> int:
    """Run `command` (dvc repro ...) under a parent MLflow run: stages that run become its children;
    stages DVC skipped are linked by their producing run's id. Returns the command's exit code."""
    if not cfg.tracking.enabled:
        return subprocess.call(command)
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = open_run(cfg, "pipeline", tags={"transferlab.command": " ".join(command)})
    code = 1
    try:
        with nested_under(parent):
            code = subprocess.call(command)
        children = {run.data.tags.get("transferlab.stage"): run.info.run_id for run in child_runs(parent)}
        parent.link_skipped(children)
        if code == 0:
            tag_lock_hashes(parent, children)
    finally:
        close_run(parent, failed=code != 0)
    return code


def tag_lock_hashes(parent: StageRun, children: dict[str, str], lock: str = "dvc.lock") -> None:
    """Copy each stage's output hashes from dvc.lock onto the parent run (all stages) and onto the
    child run of each stage that ran, so a run names the exact DVC-cached files it made."""
    import yaml

    if not Path(lock).is_file():
        return
    import mlflow

    client = mlflow.MlflowClient()
    for stage, entry in (yaml.safe_load(Path(lock).read_text()).get("stages") or {}).items():
        hashes = {f"dvc.lock.{stage}.{out['path']}": out.get("md5", "") for out in entry.get("outs", [])}
        for key, value in hashes.items():
            client.set_tag(parent.run_id, key, value)
            if stage in children:
                client.set_tag(children[stage], key, value)
