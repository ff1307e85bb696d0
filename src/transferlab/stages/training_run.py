"""The opening every training stage shares (train and finetune, every task): the digest of the data
it reads, the resume decision, the MLflow run with the machine and reproducibility tags, and the
link to the run of the stage before it."""

from __future__ import annotations

from contextlib import contextmanager

from transferlab.data import prepared

UPSTREAM = {"train": "prepare", "finetune": "train"}


@contextmanager
def training_run(cfg, stage: str, *, inputs=(), tags: dict | None = None):
    """Yields (run_log, checkpoints) for `stage`, which reads the train and validation splits and
    `inputs` (more files or folders its checkpoints depend on); `tags` go on the run with data.digest."""
    from transferlab.tracking import stage_run
    from transferlab.training.checkpoints import Checkpointing
    from transferlab.training.runtime import apply_repro, check_restarts, machine_tags

    check_restarts()
    splits = [prepared.split_path("train"), prepared.split_path("validation")]
    digest = prepared.files_digest(splits)
    checkpoints = Checkpointing(cfg, stage, inputs=[*splits, *inputs])
    with stage_run(
        stage, cfg, tags={"data.digest": digest, **(tags or {})}, resume_run_id=checkpoints.run_id
    ) as run_log:
        run_log.set_tags(machine_tags(cfg))
        run_log.set_tags(apply_repro(cfg))
        run_log.link(UPSTREAM[stage])
        yield run_log, checkpoints
