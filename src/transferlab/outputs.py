"""Atomic stage outputs: everything is written under temporary paths and moved into place only
when the whole stage succeeded, so a crash never leaves half-written outs."""

from __future__ import annotations

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
            raise UserError(f"cannot write output {final}: {err.strerror}") from None
        self._staged[final] = tmp
        return tmp

    def commit(self) -> None:
        from transferlab.runtime import is_main_process

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

    def discard(self) -> None:
        for tmp in self._staged.values():
            _remove(tmp)
        self._staged.clear()


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
    except BaseException:
        outs.discard()
        raise
    outs.commit()
