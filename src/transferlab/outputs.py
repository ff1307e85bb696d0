"""Atomic stage outputs: everything is written under temporary paths and moved into place only
when the whole stage succeeded, so a crash never leaves half-written outs."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from transferlab.errors import UserError


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
        for final, tmp in self._staged.items():
            _remove(final)
            os.replace(tmp, final)
        self._staged.clear()

    def write_error(self, err: OSError) -> UserError:
        """A failed write (disk full, read-only, no permission) as one message naming the output."""
        written = Path(err.filename) if err.filename else None
        finals = [str(final) for final, tmp in self._staged.items()
                  if written and (written == tmp or tmp in written.parents)] or list(map(str, self._staged))
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
    outs.commit()
