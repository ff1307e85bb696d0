"""`make install`'s installer (tools/install_lock.py): pip's index settings handed to uv, a lock
installed by uv and byte-compiled, pip where uv fails. Real pip, uv and venvs; a small lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import install_lock  # noqa: E402

SMALL = "appdirs"  # a pure-Python package of the lock: quick to install, one module to compile


def pip_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """An environment whose pip reads tmp_path/pip.conf over the machine's files, no user file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), **settings}


def test_pip_settings_become_uv_flags_with_pips_precedence(tmp_path):
    (tmp_path / "pip.conf").write_text(
        "[global]\n"
        "extra-index-url = file:///mirror-a/simple file:///mirror-b/simple\n"
        "find-links = /global/wheels\n"
        "timeout = 60\n"
        "[install]\n"
        "find-links = /install/wheels\n"
        "trusted-host = mirror.example\n"
    )
    env = pip_env(
        tmp_path,
        PIP_CONFIG_FILE=str(tmp_path / "pip.conf"),
        PIP_FIND_LINKS="/env/wheels",
        PIP_CERT=str(tmp_path / "ca.pem"),
    )
    settings = install_lock.pip_settings(sys.executable, env)
    flags, uv_env = install_lock.uv_arguments(settings)
    pairs = list(zip(flags[::2], flags[1::2], strict=False))
    assert pairs[0] == ("--index-strategy", "unsafe-best-match")
    assert ("--extra-index-url", "file:///mirror-a/simple") in pairs
    assert ("--extra-index-url", "file:///mirror-b/simple") in pairs
    assert ("--allow-insecure-host", "mirror.example") in pairs
    # PIP_FIND_LINKS wins over [install], which wins over [global]
    assert [value for flag, value in pairs if flag == "--find-links"] == ["/env/wheels"]
    assert uv_env["SSL_CERT_FILE"] == str(tmp_path / "ca.pem") and uv_env["UV_HTTP_TIMEOUT"] == "60"


def test_no_index_is_passed_on(tmp_path):
    env = pip_env(tmp_path, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    flags, _ = install_lock.uv_arguments(install_lock.pip_settings(sys.executable, env))
    assert flags == ["--index-strategy", "unsafe-best-match", "--no-index"]


@pytest.fixture
def small_lock(tmp_path) -> Path:
    """A lock that includes a shared one, as requirements-cpu.lock does: uv and one small package,
    at the project lock's pins."""
    project = REPO / "requirements.lock"
    shared = tmp_path / "shared.lock"
    shared.write_text(f"{install_lock.locked_version(project, 'uv')}\n")
    lock = tmp_path / "small.lock"
    lock.write_text(f"-r shared.lock\n{install_lock.locked_version(project, SMALL)}\n")
    return lock


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def installed(venv: Path) -> dict[str, bool]:
    """SMALL's version in venv, and whether its module is byte-compiled."""
    code = f"import importlib.metadata as m; print(m.version('{SMALL}'))"
    version = subprocess.run([venv / "bin/python", "-c", code], capture_output=True, text=True, check=True)
    compiled = list((venv / "lib").glob(f"python3*/site-packages/__pycache__/{SMALL}.cpython-*.pyc"))
    return {"version": version.stdout.strip(), "compiled": bool(compiled)}


def test_a_lock_is_installed_by_uv_at_its_pins_and_byte_compiled(small_lock, tmp_path):
    venv = fresh_venv(tmp_path / "venv")
    assert install_lock.install(str(venv), str(small_lock)) == "uv"
    pinned = install_lock.locked_version(small_lock, SMALL).split("==")[1]
    assert installed(venv) == {"version": pinned, "compiled": True}
    assert (venv / "bin/uv").exists()


def test_where_uv_fails_pip_installs_the_same_pins(small_lock, tmp_path, capfd):
    venv = fresh_venv(tmp_path / "venv")
    # --progress-bar is pip's own option: uv refuses it, pip takes it
    assert install_lock.install(str(venv), str(small_lock), "--progress-bar", "off") == "pip"
    assert "installing with pip" in capfd.readouterr().err
    pinned = install_lock.locked_version(small_lock, SMALL).split("==")[1]
    assert installed(venv) == {"version": pinned, "compiled": True}


def test_a_package_the_lock_does_not_pin_is_named():
    with pytest.raises(LookupError, match="no-such-package is not pinned"):
        install_lock.locked_version(REPO / "requirements-cpu.lock", "no-such-package")
