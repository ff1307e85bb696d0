"""What dvc.yaml says about the stages: their order, params keys, code and outputs. Read by
tracking (config fingerprints) and by sweeps (the stage cache), so both follow the one pipeline."""

from __future__ import annotations

import os
from pathlib import Path

WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"  # set by sweeps, whose stages run in other directories


def workspace() -> Path:
    """The directory holding dvc.yaml, conf/ and the code: the current one unless a sweep says."""
    return Path(os.environ.get(WORKSPACE_ENV) or Path.cwd())


def project_root() -> Path:
    """The repository that owns the MLflow store. Usually the workspace; for `dvc exp run --queue`
    (or --temp) the workspace is a copy under <repo>/.dvc/tmp/exps/ that DVC deletes afterwards."""
    parts = workspace().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return workspace()


def stages() -> dict:
    import yaml

    path = workspace() / "dvc.yaml"
    return yaml.safe_load(path.read_text())["stages"] if path.is_file() else {}


def stage_names() -> list[str]:
    return list(stages())


def upstream(stage: str) -> list[str]:
    """`stage` and every stage before it, in dvc.yaml order."""
    names = stage_names()
    return names[: names.index(stage) + 1]


def stage_params(stage: str) -> list[str] | None:
    """The params keys `stage` and every stage before it depend on (None: no dvc.yaml)."""
    specs = stages()
    if stage not in specs:
        return None
    keys: list[str] = []
    for name in upstream(stage):
        keys += [k for k in specs[name].get("params", []) if isinstance(k, str) and k not in keys]
    return keys


def _paths(entries) -> list[str]:
    """dvc.yaml lists paths as plain strings or as one-key mappings {path: options}."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []]


def outs(stage: str) -> list[str]:
    """The folders and files a stage hands to later stages (its `outs`)."""
    return _paths(stages()[stage].get("outs"))


def outputs(stage: str) -> list[str]:
    """Everything a stage writes: outs, metrics and plots files."""
    spec = stages()[stage]
    return [*outs(stage), *_paths(spec.get("metrics")), *_paths(spec.get("plots"))]


def code_deps(stage: str) -> list[str]:
    """The deps of `stage` and its upstream stages that no stage produces: the code it runs."""
    produced = [out for name in stage_names() for out in outs(name)]
    deps: list[str] = []
    for name in upstream(stage):
        for dep in _paths(stages()[name].get("deps")):
            if dep not in deps and not any(dep == out or dep.startswith(out + "/") for out in produced):
                deps.append(dep)
    return deps
