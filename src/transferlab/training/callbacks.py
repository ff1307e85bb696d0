"""Trainer callbacks the training stages share: the NaN stop and the epoch throughput meter."""

from __future__ import annotations

from transferlab.errors import UserError


def epoch_throughput(tokens_per_epoch: int, report):
    """A Trainer callback timing each whole epoch's training (evaluation and saving come after
    on_epoch_end, so they are excluded): report(epoch, real tokens per second). A resumed epoch
    is partial and is not reported."""
    import time

    from transformers import TrainerCallback

    class _EpochThroughput(TrainerCallback):
        started = None

        def on_epoch_begin(self, args, state, control, **kwargs):
            per_epoch = state.max_steps / max(args.num_train_epochs, 1)
            whole = state.global_step % round(per_epoch) == 0 if per_epoch >= 1 else False
            self.started = time.perf_counter() if whole else None

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.started is not None:
                report(round(state.epoch), tokens_per_epoch / (time.perf_counter() - self.started))

    return _EpochThroughput()


class Diverged(UserError):
    """The loss stopped being a number: the run diverged."""

    def __init__(self, stage: str, kind: str, value: float, step: int, kept=None) -> None:
        self.parts = (stage, kind, value, step)
        where = f"; the last good checkpoint is kept in {kept}" if kept else ""
        super().__init__(f"{stage}: the {kind} loss is {value} at step {step}: the run diverged "
                         f"(lower the learning rate){where}; no outputs were written")

    def keeping(self, folder) -> Diverged:
        return Diverged(*self.parts, kept=folder)


def stop_on_nan(stage: str):
    """A Trainer callback that ends training with one clear error when the loss stops being a
    number: a diverged run must not go on to save (or be selected as) a model."""
    import math

    from transformers import TrainerCallback

    class _StopOnNaN(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, kind in (("loss", "training"), ("eval_loss", "validation")):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(value):
                    raise Diverged(stage, kind, value, state.global_step)

    return _StopOnNaN()
