"""Atomic stage outputs: everything is written under temporary paths and moved into place only
when the whole stage succeeded, so a crash never leaves half-written outs."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from transferlab.errors import UserError

# Files DVC records with a stage's outputs when it ends (params.yaml), as the stage read them.
_read_at_start: dict[Path, bytes | None] = {}


def keep_only_if_unchanged(path: str | Path) -> None:
    """Outputs are committed only while `path` still holds what the stage read at its start: DVC
    records the file's values with the outputs, so a second `dvc exp run -S` rewriting params.yaml
    during a stage would pair the new values with a model made with the old ones."""
    _read_at_start[Path(path)] = _content(Path(path))


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class StagedOutputs:
    """Hands out temporary paths next to each final output; `commit` moves them into place."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}

    def path(self, final: str | Path, *, is_dir: bool = False) -> Path:
        final = Path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            # The suffix stays last: writers such as matplotlib pick the format from it.
            tmp = final.parent / f".{final.stem}.tmp-{os.getpid()}{final.suffix}"
            _remove(tmp)
            if is_dir:
                tmp.mkdir()
        except OSError as err:
            raise UserError(f"cannot write output {final}: {final.parent}/ {_reason(err)}") from None
        self._staged[final] = tmp
        return tmp

    def commit(self) -> None:
        from transferlab.training.runtime import is_main_process

        if not is_main_process():  # under torchrun every process runs the stage; rank 0 writes
            self.discard()
            return
        for final, tmp in self._staged.items():
            if not tmp.exists():
                raise RuntimeError(f"stage did not write its output {final}")
        for path, content in _read_at_start.items():
            if _content(path) != content:
                raise UserError(
                    f"{path} changed while this stage ran (another `dvc exp run` or `transferlab "
                    "compose`?): its outputs were made with the old values and are not kept; run "
                    "again once the other command is done"
                )
        for final, tmp in self._staged.items():
            _remove(final)
            os.replace(tmp, final)
        self._staged.clear()

    def write_error(self, err: OSError) -> UserError:
        """A failed write (disk full, read-only, no permission) as one message naming the output."""
        written = Path(err.filename) if err.filename else None
        finals = [
            str(final)
            for final, tmp in self._staged.items()
            if written and (written == tmp or tmp in written.parents)
        ] or list(map(str, self._staged))
        return UserError(f"cannot write output {', '.join(finals)}: {_reason(err)}")

    def discard(self) -> None:
        for tmp in self._staged.values():
            _remove(tmp)
        self._staged.clear()


# Errors of the place written to, not of the program: full disk, quota, read-only, permissions.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _reason(err: OSError) -> str:
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return "is not a writable folder (a file is in the way)"
    return f"cannot be written: {err.strerror}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def staged_outputs():
    """`with staged_outputs() as outs: write to outs.path(...)`; committed only on success."""
    outs = StagedOutputs()
    try:
        yield outs
    except OSError as err:
        message = outs.write_error(err) if err.errno in WRITE_ERRORS else None
        outs.discard()
        if message:
            raise message from None
        raise
    except BaseException:
        outs.discard()
        raise
    try:
        outs.commit()
    except BaseException:
        outs.discard()
        raise


def restore_last_good() -> list[str]:
    """Put back, from DVC's cache, the outputs that dvc.lock records for the stage DVC is running.

    DVC deletes a stage's outputs before its command starts (they are not `persist: true`, which
    would turn DVC's run cache off); when the command then fails, this restores the last good ones,
    so a failed stage leaves the workspace as it was. Only under DVC (DVC_STAGE and DVC_ROOT set)
    and only outputs that are missing and whose every file is in the cache. Returns their paths.
    No DVC API does this inside a running stage (`dvc checkout` would wait for the lock `dvc repro`
    holds), so the cache is read directly: its layout (files/md5/xx/rest, `.dir` listings) is
    DVC 3's on-disk format. `cache: false` outputs (the metrics files) are in git, not in the
    cache: they come back from the last commit when its copy is the one dvc.lock records."""
    import yaml

    _read_at_start.clear()  # the last good outputs go back whatever params.yaml holds now
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    lock = Path(root or ".") / "dvc.lock"
    if not stage or not root or not lock.is_file():
        return []
    entry = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}
    from dvc.repo import Repo

    with Repo(root) as repo:
        restored = []
        for out in entry.get("outs", []):
            final, oid = Path(root) / out["path"], out.get("md5")
            if final.exists() or not oid:
                continue
            contents = _last_good_files(repo, out["path"], oid)
            if contents is None:
                continue
            outs = StagedOutputs()
            tmp = outs.path(final, is_dir=oid.endswith(".dir"))
            for rel, write in contents:
                target = tmp / rel if rel else tmp
                target.parent.mkdir(parents=True, exist_ok=True)
                write(target)
            outs.commit()
            restored.append(out["path"])
    return restored


def _last_good_files(repo, path: str, oid: str):
    """[(relative path, writer)] for every file of the output dvc.lock records as `oid`, from
    DVC's cache or, for a single file, from the last commit; None when a file is in neither."""
    import hashlib
    import json

    cache = repo.cache.local
    if oid.endswith(".dir"):
        listing_path = Path(cache.oid_to_path(oid))
        if not listing_path.is_file():
            return None
        files = [(item["relpath"], item["md5"]) for item in json.loads(listing_path.read_text())]
    else:
        files = [("", oid)]
    sources = [(rel, Path(cache.oid_to_path(md5))) for rel, md5 in files]
    if all(source.is_file() for _, source in sources):
        return [
            (rel, lambda target, source=source: shutil.copyfile(source, target)) for rel, source in sources
        ]
    if oid.endswith(".dir"):
        return None
    try:
        committed = repo.scm.get_fs("HEAD").cat_file(path)
    except Exception:  # no commit yet, or the file is not in it
        return None
    if hashlib.md5(committed).hexdigest() != oid:
        return None
    return [("", lambda target: target.write_bytes(committed))]
