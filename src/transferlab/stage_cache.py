"""Stage outputs by content hash, for sweeps: a stage whose config (its own params and its
upstream stages', as dvc.yaml lists them) and code are unchanged runs once; every later job and
sweep links its outputs. Like DVC's run cache, but safe for concurrent jobs (a lock per entry),
and an entry appears only complete (built in a temporary folder, then renamed). A stage's
checkpoints live next to its entry, not in the temporary folder: a job that Slurm requeues (or
that was killed) resumes from them into the same MLflow run when it runs again."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from transferlab import pipeline
from transferlab.hashing import files_digest

log = logging.getLogger(__name__)


def key(cfg, stage: str) -> str:
    """Digest of the config that determines `stage`'s outputs, of the code that computes them and
    of the data file they start from."""
    from omegaconf import OmegaConf

    from transferlab.data.sources import source_path
    from transferlab.tracking import fingerprint

    root = pipeline.workspace()
    inputs = [root / dep for dep in pipeline.code_deps(stage)]  # code_deps include data/raw
    data_path = OmegaConf.select(cfg, "data.path")
    if data_path:  # the data file, wherever it is: an edit makes every stage run again
        inputs.append(source_path(data_path))
    return files_digest(
        inputs,
        name=lambda file: str(file.relative_to(root)) if file.is_relative_to(root) else str(file),
        seed=fingerprint(cfg, stage).encode(),
    )[:20]


def cache_root(cfg) -> Path:
    return pipeline.workspace() / cfg.sweep.cache_dir


def link_outputs(into: Path, entry: Path, paths: list[str]) -> None:
    """Symlink each of `paths` inside `into` to the same path in a cache entry."""
    for rel in paths:
        source, target = entry / rel, into / rel
        if not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        target.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def with_checkpoints_in(cfg, folder: Path):
    """`cfg` with checkpoint.dir set to `folder` (absolute): the entry's own, shared by every attempt
    of this key (one at a time, under the entry's lock) and by no other key."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, {"checkpoint": {"dir": str(folder.resolve())}})


def run(stage: str, cfg, upstream: dict[str, Path]) -> tuple[Path, bool]:
    """Run `stage` in its own cache entry unless the entry exists. `upstream` maps earlier stages
    to their entries, whose outs are linked in first. Returns (entry, whether it ran here)."""
    from filelock import FileLock

    from transferlab import stages

    final = cache_root(cfg) / stage / key(cfg, stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{final}.lock"):  # a concurrent job with the same key waits, then reuses
        if final.is_dir():
            log.info("%s: reusing %s (same config and code)", stage, final)
            return final, False
        building = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        try:
            for name, entry in upstream.items():
                link_outputs(building, entry, pipeline.outs(name))
            with contextlib.chdir(building):
                stages.run(stage, with_checkpoints_in(cfg, final.with_name(f".{final.name}.checkpoints")))
            for name in upstream:  # the entry keeps only what this stage wrote
                for rel in pipeline.outs(name):
                    (building / rel).unlink(missing_ok=True)
            os.replace(building, final)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return final, True
