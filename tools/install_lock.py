"""Install a lock into a venv with uv, under pip's own index settings; with pip where uv fails.

    python tools/install_lock.py VENV LOCK [--extra-index-url URL]      (run by `make install`)

uv downloads, unpacks and byte-compiles in parallel: a fresh CPU install here took 35 s against
pip's 43 s plus 27 s of compileall. It installs with --no-deps, like pip, so the lock is the whole
install. uv does not read pip's configuration (a mirror, a local wheel folder, a certificate), so the
settings pip would use are read with `pip config list` and handed to uv; a setting uv has no
counterpart for is not passed on, and if uv then fails, pip installs the same pins.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

UV = "uv"  # its version is the lock's pin (requirements.lock; the `dev` extra of pyproject.toml)
# pip reads a setting from the environment (PIP_*) first, then the [install] section, then [global].
PRECEDENCE = (":env:", "install", "global")
# pip settings that are lists of values -> uv's flag for each value.
LIST_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
# pip settings that uv takes from an environment variable.
ENV_VARS = {"cert": "SSL_CERT_FILE", "timeout": "UV_HTTP_TIMEOUT", "default-timeout": "UV_HTTP_TIMEOUT"}


def pip_settings(python: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """name -> value of each setting pip would apply to `pip install`, from `pip config list`."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True, env=env
    ).stdout
    by_section: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        by_section.setdefault(name, {})[section] = ast.literal_eval(value)
    return {
        name: next(values[section] for section in PRECEDENCE if section in values)
        for name, values in by_section.items()
        if any(section in values for section in PRECEDENCE)
    }


def uv_arguments(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv's flags and environment variables for pip's settings."""
    flags = ["--index-strategy", "unsafe-best-match"]  # as pip: the best match over every index
    for name, flag in LIST_FLAGS.items():
        for value in settings.get(name, "").split():
            flags += [flag, value]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        flags.append("--no-index")
    env = {var: settings[name] for name, var in ENV_VARS.items() if name in settings}
    return flags, env


def locked_version(lock: Path, name: str) -> str:
    """`name==version` as the lock (or a lock it includes with -r) pins it."""
    for line in lock.read_text().splitlines():
        if line.startswith("-r "):
            try:
                return locked_version(lock.parent / line.removeprefix("-r ").strip(), name)
            except LookupError:
                continue
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise LookupError(f"{name} is not pinned in {lock}")


def install(venv: str, lock: str, *pip_args: str) -> str:
    """Install `lock` into `venv` (uv, else pip); returns the installer that did it."""
    python, quiet = f"{venv}/bin/python", ("--quiet", "--no-deps")
    pip = [python, "-m", "pip", "install", *quiet]
    try:
        subprocess.run([*pip, locked_version(Path(lock), UV)], check=True)
        flags, env = uv_arguments(pip_settings(python))
        uv = [f"{venv}/bin/uv", "pip", "install", *quiet, "--python", python, "--compile-bytecode"]
        subprocess.run([*uv, "-r", lock, *flags, *pip_args], check=True, env={**os.environ, **env})
        return "uv"
    except (subprocess.CalledProcessError, LookupError, OSError) as error:
        print(f"install_lock: uv could not install {lock} ({error}); installing with pip", file=sys.stderr)
    subprocess.run([*pip, "--no-compile", "-r", lock, *pip_args], check=True)
    # All files on all cores, not pip's one at a time; exits 1 over the few files written for a newer
    # Python (torch.testing), which is why its status is not checked.
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", f"{venv}/lib"], stdout=subprocess.DEVNULL)
    return "pip"


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    try:
        install(*sys.argv[1:])
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"install_lock: {' '.join(error.cmd)} failed (exit {error.returncode})") from None
