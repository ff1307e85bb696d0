"""Everything MLflow: stages call `stage_run(...)` and a few plain methods, never MLflow itself."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

from transferlab.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_ENV = "TRANSFERLAB_PARENT_RUN_ID"  # set by `transferlab run` for the stages `dvc repro` starts


def tracking_uri(cfg) -> str:
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


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
    """Point MLflow at the configured store and experiment, or fail with one clear message."""
    import mlflow

    uri = tracking_uri(cfg)
    _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(cfg.tracking.experiment)
    except Exception as err:  # a bad store URI or an unreadable store
        raise UserError(f"cannot open MLflow tracking store {masked(uri)}: {err}") from None
    return uri


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


def _stages(dvc_yaml: str | Path = "dvc.yaml") -> dict:
    import yaml

    path = Path(dvc_yaml)
    return yaml.safe_load(path.read_text())["stages"] if path.is_file() else {}


def stage_names() -> list[str]:
    return list(_stages())


def stage_params(stage: str, dvc_yaml: str | Path = "dvc.yaml") -> list[str] | None:
    """The params keys `stage` and every stage before it in dvc.yaml depend on (None: no dvc.yaml)."""
    keys: list[str] = []
    for name, spec in _stages(dvc_yaml).items():
        keys += [k for k in spec.get("params", []) if isinstance(k, str) and k not in keys]
        if name == stage:
            return keys
    return None


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
    """The handle a stage logs through; a disabled run accepts the same calls and drops them."""

    def __init__(self, mlflow_module=None, cfg=None, experiment_id: str | None = None) -> None:
        self._mlflow = mlflow_module
        self._cfg = cfg
        self._experiment_id = experiment_id

    def link(self, upstream: str) -> str | None:
        """Tag this run with the run that produced `upstream`'s outputs: found by fingerprint, so it
        is the right run even when DVC skipped or restored the upstream stage from its cache."""
        if not self._mlflow:
            return None
        found = latest_stage_run(upstream, fingerprint(self._cfg, upstream), self._experiment_id)
        if found is None:
            log.warning("no finished MLflow run of stage %s with this config: lineage not linked", upstream)
            return None
        self.set_tags({f"lineage.{upstream}_run_id": found.info.run_id})
        return found.info.run_id

    def log_dataset(self, frame, name: str, digest: str, context: str) -> None:
        """Data lineage: the split this stage read, by name and content digest."""
        if self._mlflow:
            import mlflow.data

            dataset = mlflow.data.from_pandas(frame, name=name, digest=digest)
            self._mlflow.log_input(dataset, context=context)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self._mlflow:
            self._mlflow.log_text(text, artifact_file)

    def log_table(self, frame, artifact_file: str) -> None:
        """A DataFrame as an MLflow table (shown in the UI's artifact view and evaluation tab)."""
        if self._mlflow:
            self._mlflow.log_table(data=frame, artifact_file=artifact_file)

    @property
    def run_id(self) -> str | None:
        return self._mlflow.active_run().info.run_id if self._mlflow else None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self._mlflow:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self._mlflow and Path(path).exists():
            log_fn = self._mlflow.log_artifacts if Path(path).is_dir() else self._mlflow.log_artifact
            log_fn(str(path), folder)

    def set_tags(self, tags: dict) -> None:
        if self._mlflow:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def trainer_callback(self):
        """A transformers callback that sends every Trainer log line to this run."""
        from transformers import TrainerCallback

        run = self

        class _LogToRun(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    run.log_metrics(logs, step=state.global_step)

        return _LogToRun()


@contextmanager
def stage_run(stage: str, cfg, *, tags: dict | None = None):
    """An MLflow run for one stage execution, with the config, git state and versions recorded."""
    if not cfg.tracking.enabled:
        yield StageRun()
        return
    import mlflow
    from omegaconf import OmegaConf

    uri = _open_store(cfg)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    # A pipeline run (`transferlab run`) is the parent; MLFLOW_RUN_ID must not hijack the nesting.
    os.environ.pop("MLFLOW_RUN_ID", None)
    parent = os.environ.get(PARENT_ENV) or None
    with mlflow.start_run(run_name=stage, parent_run_id=parent, log_system_metrics=True) as active, \
            _captured_log() as stage_log:
        mlflow.log_params(flatten(config))
        mlflow.log_text(OmegaConf.to_yaml(config), "config.yaml")
        mlflow.set_tags({"transferlab.stage": stage, "transferlab.fingerprint": fingerprint(cfg, stage),
                         **_git_tags(), **_dvc_tags(), **_version_tags(),
                         **{k: str(v) for k, v in (tags or {}).items()}})
        log.info("MLflow run %s (%s) in %s", active.info.run_id, stage, masked(uri))
        try:
            yield StageRun(mlflow, cfg, active.info.experiment_id)
        finally:
            mlflow.log_artifact(str(stage_log), "logs")


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
    import subprocess

    if not cfg.tracking.enabled:
        return subprocess.call(command)
    import mlflow

    _open_store(cfg)
    os.environ.pop("MLFLOW_RUN_ID", None)
    with mlflow.start_run(run_name="pipeline") as parent:
        mlflow.set_tags({"transferlab.stage": "pipeline", "transferlab.command": " ".join(command),
                         **_git_tags(), **_dvc_tags()})
        env = dict(os.environ, **{PARENT_ENV: parent.info.run_id})
        code = subprocess.call(command, env=env)
        children = {run.data.tags.get("transferlab.stage"): run.info.run_id for run in mlflow.search_runs(
            experiment_ids=[parent.info.experiment_id], output_format="list",
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
        for stage in stage_names():
            if stage in children:
                continue
            found = latest_stage_run(stage, fingerprint(cfg, stage), parent.info.experiment_id)
            if found is not None:  # skipped by DVC: link the run that made its outputs
                mlflow.set_tag(f"lineage.{stage}_run_id", found.info.run_id)
        if code == 0:
            tag_lock_hashes(mlflow, parent.info.run_id, children)
        if code != 0:
            mlflow.end_run(status="FAILED")
    return code


def tag_lock_hashes(mlflow, parent_id: str, children: dict[str, str], lock: str = "dvc.lock") -> None:
    """Copy each stage's output hashes from dvc.lock onto the parent run (all stages) and onto the
    child run of each stage that ran, so a run names the exact DVC-cached files it made."""
    import yaml

    if not Path(lock).is_file():
        return
    client = mlflow.MlflowClient()
    for stage, entry in (yaml.safe_load(Path(lock).read_text()).get("stages") or {}).items():
        hashes = {f"dvc.lock.{stage}.{out['path']}": out.get("md5", "") for out in entry.get("outs", [])}
        for key, value in hashes.items():
            client.set_tag(parent_id, key, value)
            if stage in children:
                client.set_tag(children[stage], key, value)
