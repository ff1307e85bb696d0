"""Device, precision and seeding: the few facts about the machine every stage needs."""

from __future__ import annotations

import logging

from transferlab.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a user error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible: use device=auto or device=cpu")
    return requested


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def trainer_device_args(device: str, precision: str) -> dict:
    """TrainingArguments entries for the chosen device and precision."""
    args = {"use_cpu": device == "cpu", "bf16": precision == "bf16"}
    if device == "cuda" and precision == "bf16":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise UserError("precision=bf16 but this GPU has no bf16 support: use precision=fp32")
    return args


def training_arguments(cfg, output_dir: str, **overrides):
    """TrainingArguments shared by every training stage: seeds, device, precision, logging."""
    from transformers import TrainingArguments

    device = resolve_device(cfg.device)
    settings = {
        "output_dir": output_dir,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "report_to": "none",  # transferlab.tracking logs to MLflow through a callback
        "logging_strategy": "steps",
        "logging_steps": 10,
        "logging_first_step": True,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        **trainer_device_args(device, cfg.precision),
    }
    return TrainingArguments(**(settings | overrides))


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
                    raise UserError(f"{stage}: the {kind} loss is {value} at step {state.global_step}: "
                                    "the run diverged (lower the learning rate); no outputs were written")

    return _StopOnNaN()
