"""Trainer callbacks the training stages share: the NaN stop (with, in a `transferlab tune` trial,
the pruner's stop) and the epoch throughput meter."""

from __future__ import annotations

from contextlib import contextmanager

from transferlab.errors import UserError

_trials: dict[str, tuple] = {}  # stage -> (Optuna trial, sweep.objective) while it reports to one


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
        super().__init__(
            f"{stage}: the {kind} loss is {value} at step {step}: the run diverged "
            f"(lower the learning rate){where}; no outputs were written"
        )

    def keeping(self, folder) -> Diverged:
        return Diverged(*self.parts, kept=folder)


@contextmanager
def reporting_to(trial, objective: str, stage: str = "finetune"):
    """Inside this block `stage` reports `objective` (a sweep.objective) to the Optuna `trial` after
    each epoch, and its training ends with optuna.TrialPruned when the study's pruner says so."""
    _trials[stage] = (trial, objective)
    try:
        yield
    finally:
        _trials.pop(stage, None)


def objective_so_far(history: list[dict], objective: str) -> float:
    """`objective` as if training ended now: the value at the epoch of lowest validation loss so far,
    the epoch the fine-tuning stages keep (best_validation_accuracy: that epoch's eval_accuracy)."""
    best = min((entry for entry in history if "eval_loss" in entry), key=lambda entry: entry["eval_loss"])
    return best["eval_" + objective.removeprefix("best_validation_")]


def stop_on_nan(stage: str):
    """A Trainer callback that ends training with one clear error when the loss stops being a
    number: a diverged run must not go on to save (or be selected as) a model. Every training
    stage installs it (checkpoints.train), so it is also where a tuning trial's pruner stops
    training (see reporting_to): nothing is saved, and the stage ends with optuna.TrialPruned."""
    import math

    from transformers import TrainerCallback

    class _StopOnNaN(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, kind in (("loss", "training"), ("eval_loss", "validation")):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(value):
                    raise Diverged(stage, kind, value, state.global_step)

        def on_evaluate(self, args, state, control, **kwargs):
            if stage not in _trials:
                return
            import optuna

            trial, objective = _trials[stage]
            epoch = round(state.epoch)
            trial.report(objective_so_far(state.log_history, objective), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{stage}: pruned after epoch {epoch}")

    return _StopOnNaN()
