"""Resumable training for the train and finetune stages: Trainer's own checkpoints (model,
optimizer, scheduler, scaler, every RNG state, data position, callback states) every
`checkpoint.every_steps` steps under <checkpoint.dir>/<stage>/checkpoint-N. Trainer writes a
checkpoint file by file, so each one is completed by a marker written last and atomically (the
config key, the MLflow run id, the sha256 of every file): a rerun resumes from the newest checkpoint
with a marker of the same key into the same MLflow run, and never from a half-written one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from transferlab.errors import UserError
from transferlab.hashing import files_digest, sha256, sha256_text

log = logging.getLogger(__name__)
MARKER = "transferlab.json"
PREFIX = "checkpoint-"


def inputs_digest(paths) -> str:
    """sha256 over the names and bytes of files and of every file in folders."""
    return files_digest(paths, content=sha256_text)[:20]


def stage_key(cfg, stage: str, inputs) -> dict[str, str]:
    """What a checkpoint's training depends on, part by part (so a mismatch can say which part):
    the stage's config, its code (stage_cache.key: config and code of it and its upstream), the
    input files, and the number of processes (one RNG state and data shard per process)."""
    from transferlab import pipeline, stage_cache
    from transferlab.tracking import fingerprint
    from transferlab.training.runtime import world_size

    code = stage_cache.key(cfg, stage) if stage in pipeline.stages() else "no dvc.yaml"
    return {
        "config": fingerprint(cfg, stage),
        "code": code,
        "input data": inputs_digest(inputs),
        "processes": str(world_size()),
    }


def step_of(folder: Path) -> int:
    suffix = folder.name[len(PREFIX) :]
    return int(suffix) if suffix.isdigit() else -1


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(folder: Path, marker: dict) -> None:
    """The marker, by temp file + os.replace: it exists complete or not at all."""
    tmp = folder / f".{MARKER}.tmp-{os.getpid()}"
    with tmp.open("w") as f:
        json.dump(marker, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)


def verify(folder: Path, marker: dict) -> None:
    """Every file the marker lists is there with the bytes it had when saved, and the pickled ones
    (optimizer, scheduler, RNG) load as plain tensors; otherwise one UserError saying what to do."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    remedy = (
        f"delete {folder} (training resumes from an earlier checkpoint, or starts over), or "
        "rerun with checkpoint.resume=false"
    )
    for name, digest in marker.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise UserError(f"corrupt checkpoint: {path} is missing: {remedy}")
        if sha256(path) != digest:
            raise UserError(
                f"corrupt checkpoint: {path} does not match the digest recorded when it was "
                f"saved (truncated or overwritten): {remedy}"
            )
        if path.suffix in (".pt", ".pth", ".bin") and name != "training_args.bin":  # never loaded
            try:  # as Trainer loads them: tensors and numpy arrays only, no code runs from a checkpoint
                with safe_globals():
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise UserError(
                    f"corrupt checkpoint: {path} is not a plain tensor file "
                    f"({str(err).splitlines()[0][:200]}): {remedy}"
                ) from None


class Checkpointing:
    """One stage's checkpoints. Created before the MLflow run opens: it decides (read-only, the same
    way in every process of a distributed launch) whether to resume, and from which run."""

    def __init__(self, cfg, stage: str, inputs) -> None:
        self.cfg, self.stage = cfg, stage
        self.every = cfg.checkpoint.every_steps
        self.folder = Path(cfg.checkpoint.dir) / stage
        self.resume_from: Path | None = None
        self.run_id: str | None = None  # the MLflow run of the checkpoint to resume
        self._marker: dict = {}
        self._remove: list[Path] = []  # stale or incomplete, removed once every process decided
        self.key = stage_key(cfg, stage, inputs) if self.every > 0 else {}
        if self.every > 0:
            self._decide()

    def _decide(self) -> None:
        if not self.folder.is_dir():
            return
        if not self.cfg.checkpoint.resume:
            log.info("%s: checkpoint.resume=false: removing %s and starting clean", self.stage, self.folder)
            self._remove = [self.folder]
            return
        folders = sorted((p for p in self.folder.iterdir() if p.name.startswith(PREFIX)), key=step_of)
        markers = {p: read_marker(p) for p in folders}
        complete = [p for p in folders if markers[p] is not None]
        self._remove = [p for p in self.folder.iterdir() if p not in complete]  # half-written, temp files
        if not complete:
            if folders:
                log.info(
                    "%s: no complete checkpoint in %s (interrupted while saving): starting clean",
                    self.stage,
                    self.folder,
                )
            return
        saved = markers[complete[-1]]["key"]
        changed = [part for part, value in self.key.items() if saved.get(part) != value]
        if changed:
            log.warning(
                "%s: the checkpoints in %s were made with a different %s: removing them and starting clean",
                self.stage,
                self.folder,
                " and ".join(changed),
            )
            self._remove = [self.folder]
            return
        for folder in complete:  # the newest to resume, and the best one Trainer loads at the end
            verify(folder, markers[folder])
        self.resume_from = complete[-1]
        self._marker = markers[self.resume_from]
        self.run_id = self._marker.get("run_id")
        log.info("%s: resuming from %s (step %d)", self.stage, self.resume_from, step_of(self.resume_from))

    @contextlib.contextmanager
    def workdir(self):
        """Trainer's output_dir: the checkpoint folder, removed once the block succeeded (the
        outputs are DVC's then) and kept after a failure, to resume from; checkpointing off: a
        temporary folder."""
        from transferlab.training.runtime import barrier, is_main_process

        if self.every <= 0:
            with tempfile.TemporaryDirectory(prefix=f"transferlab-{self.stage}-") as folder:
                yield folder
            return
        yield str(self.folder)
        barrier()  # every process has loaded the best checkpoint (load_best_model_at_end) first
        if is_main_process():
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.folder.parent.rmdir()  # only if empty

    def trainer_arguments(self, **stage_settings) -> dict:
        """The stage's own TrainingArguments entries, with what full, resumable checkpoints need."""
        if self.every <= 0:
            return stage_settings
        # Three kept: the newest, the best (load_best_model_at_end) and the one before the newest,
        # which is complete while Trainer writes the next one and deletes the oldest.
        return stage_settings | {
            "save_only_model": False,
            "save_total_limit": 3,
            "restore_callback_states_from_checkpoint": True,
        }  # early stopping's count

    def train(self, trainer, run_log):
        """trainer.train() with the NaN stop, resumed from the chosen checkpoint, with a checkpoint
        every N steps. Its training_loss is the whole run's mean loss, resumed or not."""
        from transformers import DefaultFlowCallback

        from transferlab.training.callbacks import Diverged, stop_on_nan
        from transferlab.training.runtime import barrier, is_main_process

        # Right after Trainer's DefaultFlowCallback (which sets this step's log/save flags), before
        # the stage's own: the NaN stop acts before any logger or saver sees a diverged loss, and
        # the run's training loss is corrected before the MLflow callback logs it.
        handler = trainer.callback_handler
        flow = next(i for i, c in enumerate(handler.callbacks) if isinstance(c, DefaultFlowCallback))
        handler.callbacks[flow + 1 : flow + 1] = [stop_on_nan(self.stage), self._callback(run_log)]
        if self.every > 0:
            self._agree()  # every process has decided, the same way, before anything is removed
            if is_main_process():
                for path in self._remove:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            barrier()
        if self.resume_from is not None:
            run_log.set_tags({"checkpoint.resumed_from": self.resume_from.name})
        try:
            result = trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        except Diverged as err:  # the divergence's log came before its checkpoint: none was written
            if self.every > 0 and any(self.folder.glob(f"{PREFIX}*/{MARKER}")):
                raise err.keeping(self.folder) from None
            raise
        return result._replace(training_loss=trainer.state.log_history[-1]["train_loss"])

    def _agree(self) -> None:
        """Each process decided alone, before the process group existed (its rank 0 opens the MLflow
        run it found). On one shared filesystem, with one project, they agree; a node that sees
        another checkpoint.dir, config, code or data stops the launch here, on every process,
        before anything is removed or trained. Under torchrun's restarts (--max-restarts) the new
        group decides again from the markers on disk: the newest complete checkpoint."""
        from transferlab.training.runtime import gathered

        mine = {"checkpoint to resume": self.resume_from.name if self.resume_from else "none", **self.key}
        everyone = gathered(mine)  # returns once every process has decided
        differ = [part for part in mine if len({seen[part] for seen in everyone}) > 1]
        if differ:
            named = len(differ) > 1  # name each part only when there are several
            seen = "; ".join(
                f"rank {rank}: "
                + ", ".join(f"{part} {theirs[part]}" if named else theirs[part] for part in differ)
                for rank, theirs in enumerate(everyone)
            )
            raise UserError(
                f"{self.stage}: the {len(everyone)} processes disagree on the "
                f"{' and '.join(differ)} ({seen}): every node must run the same project, "
                f"with checkpoint.dir ({self.folder.parent}) on a filesystem they all see"
            )

    def _callback(self, run_log):
        from transformers import TrainerCallback

        from transferlab.training.runtime import barrier, is_main_process

        owner = self

        class Checkpoints(TrainerCallback):
            """Saves every N steps, and logs wherever it saves and at the last step: Trainer's
            running loss is then empty in every checkpoint (so a resumed run logs what an
            uninterrupted one does) and the log history covers every step (run_mean_loss, the
            train_loss of the run's summary)."""

            def on_step_end(self, args, state, control, **kwargs):
                # Epoch ends save on their own (finetune): saving there too would rewrite a folder.
                at_epoch_end = args.save_strategy == "epoch" and abs(state.epoch - round(state.epoch)) < 1e-9
                if owner.every > 0 and state.global_step % owner.every == 0 and not at_epoch_end:
                    control.should_save = True
                if control.should_save or state.global_step >= state.max_steps:
                    control.should_log = True

            def on_epoch_end(self, args, state, control, **kwargs):
                if control.should_save:
                    control.should_log = True

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "train_loss" in logs:  # Trainer's covers only the steps since a resume
                    logs["train_loss"] = state.log_history[-1]["train_loss"] = run_mean_loss(state)

            def on_save(self, args, state, control, **kwargs):
                if owner.every <= 0:
                    return
                folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
                barrier()  # every process's files are written before the marker
                if is_main_process():
                    files = {
                        p.name: sha256(p)
                        for p in sorted(folder.iterdir())
                        if p.is_file() and p.name != MARKER and not p.name.startswith(".")
                    }
                    write_marker(
                        folder,
                        {
                            "key": owner.key,
                            "run_id": run_log.run_id,
                            "step": state.global_step,
                            "files": files,
                        },
                    )

        return Checkpoints()


def run_mean_loss(state) -> float:
    """The mean training loss over all the run's steps, from the log history (which a checkpoint
    carries): each logged loss is the mean since the log before it."""
    total, previous = 0.0, 0
    for entry in state.log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return total / max(previous, 1)
