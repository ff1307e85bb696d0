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


def speed_arguments(runtime, device: str) -> dict:
    """TrainingArguments entries for the speed levers of `runtime` (the config's runtime group)."""
    if runtime.threads:
        import torch

        torch.set_num_threads(runtime.threads)
    cuda = device == "cuda"
    return {
        "dataloader_num_workers": runtime.dataloader_workers,
        "dataloader_persistent_workers": runtime.dataloader_workers > 0,
        "dataloader_pin_memory": cuda and runtime.pin_memory,
        "train_sampling_strategy": "group_by_length" if runtime.group_by_length else "random",
        "torch_compile": runtime.compile,
        "tf32": runtime.tf32 if cuda else None,
    }


def adamw_options(runtime) -> dict:
    """torch.optim.AdamW keyword arguments for the configured kernel."""
    return {"fused": {"fused": True}, "foreach": {"foreach": True},
            "for_loop": {"foreach": False}}[runtime.optimizer]


def adamw(runtime, lr: float):
    """(class, kwargs) for Trainer(optimizer_cls_and_kwargs=...): Trainer's own parameter groups
    (no weight decay on biases and norms) with the configured AdamW kernel."""
    import torch

    return torch.optim.AdamW, {"lr": lr, **adamw_options(runtime)}


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
        **trainer_device_args(device, cfg.precision),
        **speed_arguments(cfg.runtime, device),
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
