"""Fine-tuning techniques: optimizer parameter groups with separate head/backbone learning rates and
layer-wise LR decay, the overfitting watch, the epoch schedule, and `configure_layers`, which puts
them together with freezing and gradual unfreezing (training/freezing.py) for either task.
"""

from __future__ import annotations

import logging

from transferlab.errors import UserError
from transferlab.training.freezing import Parts, freeze, gradual_unfreezing_callback, split

log = logging.getLogger(__name__)


def no_decay(name: str) -> bool:
    """Biases and normalisation weights are not weight-decayed (the usual AdamW practice)."""
    lowered = name.lower()
    return lowered.endswith("bias") or "norm" in lowered


def parameter_groups(
    parts: Parts, *, backbone_lr: float, head_lr: float, layer_decay: float, weight_decay: float, include
) -> list[dict]:
    """AdamW groups: head at head_lr; top layer at backbone_lr, each lower one times layer_decay,
    embeddings one step below the lowest layer. `include(param)` picks the parameters to train."""
    depth = len(parts.layers)
    scaled = [("head", parts.head, head_lr), ("backbone_top", parts.other_backbone, backbone_lr)]
    scaled += [
        (f"layer_{i}", layer, backbone_lr * layer_decay ** (depth - 1 - i))
        for i, layer in enumerate(parts.layers)
    ]
    scaled.append(("embeddings", parts.embeddings, backbone_lr * layer_decay**depth))
    groups = []
    for name, params, lr in scaled:
        for decayed in (True, False):
            chosen = [p for n, p in params if include(p) and no_decay(n) != decayed]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "lr": lr,
                        "name": f"{name}{'' if decayed else '/no_decay'}",
                        "weight_decay": weight_decay if decayed else 0.0,
                    }
                )
    return groups


def overfitting_events(history: list[dict]) -> list[dict]:
    """The evaluations in a Trainer log history at which validation loss rose while the mean
    training loss since the previous evaluation fell (with its index in `history`)."""
    events, window, previous = [], [], None
    for index, entry in enumerate(history):
        if "loss" in entry:
            window.append(float(entry["loss"]))
        elif "eval_loss" in entry and window:
            current = (sum(window) / len(window), float(entry["eval_loss"]))
            window = []
            if previous and current[1] > previous[1] and current[0] < previous[0]:
                events.append(
                    {
                        "index": index,
                        "epoch": entry.get("epoch") or 0,
                        "train": (previous[0], current[0]),
                        "validation": (previous[1], current[1]),
                    }
                )
            previous = current
    return events


def overfitting_signals(history: list[dict]) -> int:
    return len(overfitting_events(history))


def overfitting_callback(run_log):
    """Warns and logs a signal whenever validation loss rises while the training loss falls. It
    reads Trainer's log history, which a resumed run restores, so it keeps no state of its own."""
    from transformers import TrainerCallback

    class OverfittingWatch(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            events = overfitting_events(state.log_history)
            if events and events[-1]["index"] == len(state.log_history) - 1:  # this evaluation
                event = events[-1]
                log.warning(
                    "overfitting signal at epoch %.2f: validation loss rose %.4f -> %.4f "
                    "while training loss fell %.4f -> %.4f",
                    event["epoch"],
                    *event["validation"],
                    *event["train"],
                )
                run_log.log_metrics({"overfitting_signal": 1}, step=state.global_step)

    return OverfittingWatch()


def epoch_schedule(ft) -> dict:
    """A fine-tune's TrainingArguments, either task: finetune.epochs at finetune.batch_size with the
    backbone's LR (the head's is in the optimizer groups), evaluated every epoch, and the epoch with
    the best validation loss (early stopping's measure) restored at the end. With checkpointing off
    the best and the latest epoch's weights are all Trainer keeps."""
    return {
        "num_train_epochs": ft.epochs,
        "per_device_train_batch_size": ft.batch_size,
        "per_device_eval_batch_size": ft.batch_size,
        "learning_rate": ft.backbone_lr,
        "weight_decay": ft.weight_decay,
        "warmup_steps": ft.warmup_ratio,
        "eval_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "save_only_model": True,
    }


def configure_layers(net, ft, runtime, run_log):
    """Freeze what the config says, build the optimizer's LR groups, and the unfreezing callback.
    Runs before any training, so a freezing that leaves nothing to train stops the stage here."""
    import torch

    from transferlab.training.runtime import adamw_options

    parts = split(net)
    frozen = set(
        freeze(
            parts,
            embeddings=ft.freeze.embeddings,
            layers=ft.freeze.layers,
            patterns=list(ft.freeze.patterns),
            backbone=ft.freeze.backbone,
        )
    )
    if not any(p.requires_grad for _, p in parts.all()):
        raise UserError(
            f"finetune.freeze leaves nothing to train: it freezes all {len(frozen)} parameter tensors "
            f"of the model ({freeze_settings(ft)}); keep at least the head trainable"
        )
    if frozen:
        log.info("frozen for the whole fine-tune: %d parameter tensors", len(frozen))
    callbacks = []
    if ft.unfreeze.every > 0:
        callbacks.append(
            gradual_unfreezing_callback(parts, ft.unfreeze.every, ft.unfreeze.unit, keep_frozen=frozen)
        )
        log.info(
            "gradual unfreezing: backbone starts frozen, one more layer every %d %s(s)",
            ft.unfreeze.every,
            ft.unfreeze.unit,
        )
    # Permanently frozen tensors stay out of the optimizer; ones unfrozen later are in it from the
    # start (AdamW skips a parameter while its grad is None).
    frozen_ids = {id(p) for n, p in parts.all() if n in frozen}
    groups = parameter_groups(
        parts,
        backbone_lr=ft.backbone_lr,
        head_lr=ft.head_lr,
        layer_decay=ft.layer_lr_decay,
        weight_decay=ft.weight_decay,
        include=lambda p: id(p) not in frozen_ids,
    )
    optimizer = torch.optim.AdamW(groups, lr=ft.backbone_lr, **adamw_options(runtime))
    total = sum(p.numel() for _, p in parts.all())
    trainable = sum(p.numel() for _, p in parts.all() if p.requires_grad)
    run_log.log_metrics({"parameters_total": total, "parameters_trainable_at_start": trainable})
    run_log.set_tags({"finetune.lr_groups": ", ".join(f"{g['name']}={g['lr']:.2e}" for g in groups)})
    return optimizer, callbacks, {"parameters": total, "parameters_trainable_at_start": trainable}


def freeze_settings(ft) -> str:
    """The finetune.freeze values that freeze something, as overrides."""
    chosen = {
        key: getattr(ft.freeze, key)
        for key in ("backbone", "embeddings", "layers")
        if getattr(ft.freeze, key)
    }
    chosen |= {"patterns": list(ft.freeze.patterns)} if ft.freeze.patterns else {}
    return " ".join(f"finetune.freeze.{key}={value}" for key, value in chosen.items())
