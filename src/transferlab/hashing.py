"""The one file hasher: sha256 over files' names and contents, folders standing for every file below
them. Its callers choose the name and content each file contributes, which keeps their digests (the
data.digest tags, the checkpoint keys, the stage cache keys) what they were."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

BYTECODE = "__pycache__"


def sha256(path: Path) -> str:
    """A file's sha256, read in blocks (checkpoints and models are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(path: Path) -> bytes:
    """A file's content as its sha256 in hex: the same digest as the bytes, read in blocks."""
    return sha256(path).encode()


def files_digest(
    paths: Iterable,
    *,
    name: Callable[[Path], str] = str,
    content: Callable[[Path], bytes] = Path.read_bytes,
    seed: bytes = b"",
) -> str:
    """sha256 (hex) of `seed`, then of each file's name(file) and content(file), in the order of
    `paths`; a folder stands for every file below it, sorted, except Python's bytecode caches (as in
    .dvcignore: code folders are deps). Paths that are not there are skipped."""
    digest = hashlib.sha256(seed)
    for path in map(Path, paths):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and BYTECODE not in file.relative_to(path).parts:
                digest.update(name(file).encode())
                digest.update(content(file))
    return digest.hexdigest()
