"""Fine-tuning techniques that act on a model's layers: freezing, gradual unfreezing, and optimizer
parameter groups with separate head/backbone learning rates and layer-wise LR decay.

Works for any Hugging Face encoder (BERT-likes, the torch.nn encoder) or decoder (GPT-2, Llama,
the torch.nn decoder): the backbone is `model.base_model`, its layers the longest `nn.ModuleList`
inside it, the head everything else (nothing for a decoder whose LM head is tied to its input
embeddings).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """A classifier's parameters by role, each as (name, parameter) pairs; layers lowest first."""

    embeddings: list = field(default_factory=list)
    layers: list[list] = field(default_factory=list)
    other_backbone: list = field(default_factory=list)  # e.g. pooler, final norm
    head: list = field(default_factory=list)

    def all(self) -> list:
        return self.embeddings + [p for layer in self.layers for p in layer] + self.other_backbone + self.head


def split(model) -> Parts:
    from torch import nn

    base = model.base_model
    if base is model:
        raise ValueError("the model has no separate backbone (base_model) to split from a head")
    layer_list = max((m for m in base.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    layer_ids = []
    if layer_list is not None:
        layer_ids = [{id(p) for p in layer.parameters()} for layer in layer_list]
    embedding_ids = {id(p) for m in _embedding_modules(base) for p in m.parameters()}
    base_ids = {id(p) for p in base.parameters()}

    parts = Parts(layers=[[] for _ in layer_ids])
    for name, param in model.named_parameters():
        if id(param) not in base_ids:
            parts.head.append((name, param))
        elif id(param) in embedding_ids:
            parts.embeddings.append((name, param))
        else:
            index = next((i for i, ids in enumerate(layer_ids) if id(param) in ids), None)
            target = parts.other_backbone if index is None else parts.layers[index]
            target.append((name, param))
    return parts


def _embedding_modules(base) -> list:
    """BERT-likes keep theirs in `embeddings`; decoders have input embeddings (tied to the LM head)
    and, some of them, learnt positions (GPT-2 `wpe`, the torch.nn decoder's `positions`)."""
    if getattr(base, "embeddings", None) is not None:
        return [base.embeddings]
    modules = [base.get_input_embeddings()]
    return modules + [m for n, m in base.named_children() if n in ("wpe", "positions", "embed_positions")]


def freeze(parts: Parts, *, embeddings: bool, layers: int, patterns: list[str], backbone: bool) -> list[str]:
    """Turn off gradients for the chosen parameters; return their names."""
    chosen = []
    if backbone:  # embeddings and every layer; a pooler or final norm on top still trains
        chosen += parts.embeddings + [p for layer in parts.layers for p in layer]
    else:
        if embeddings:
            chosen += parts.embeddings
        for layer in parts.layers[:layers]:
            chosen += layer
    if patterns:
        compiled = [re.compile(p) for p in patterns]
        chosen += [(n, p) for n, p in parts.all() if any(c.search(n) for c in compiled)]
    names = []
    for name, param in chosen:
        if param.requires_grad:
            param.requires_grad_(False)
            names.append(name)
    return names


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


def unfreeze_schedule(parts: Parts, every: int) -> list[list]:
    """Units of gradual unfreezing, in order: top layer first, ..., lowest layer, then embeddings."""
    units = [layer for layer in reversed(parts.layers)]
    if parts.embeddings:
        units.append(parts.embeddings)
    return units if every > 0 else []


def gradual_unfreezing_callback(parts: Parts, every: int, unit: str, keep_frozen: set[str]):
    """A Trainer callback: the backbone starts frozen; every `every` epochs (or steps) one more
    unit is unfrozen, top down (ULMFiT). Parameters in `keep_frozen` stay frozen throughout."""
    from transformers import TrainerCallback

    units = unfreeze_schedule(parts, every)
    for _, param in [p for u in units for p in u] + parts.other_backbone:
        param.requires_grad_(False)

    class GradualUnfreezing(TrainerCallback):
        def __init__(self):
            self.unfrozen = 0
            self.history: list[tuple[int, int]] = []  # (global step, units unfrozen)

        def _advance(self, state, elapsed: int) -> None:
            target = min(len(units), elapsed // every)
            while self.unfrozen < target:
                for name, param in units[self.unfrozen]:
                    if name not in keep_frozen:
                        param.requires_grad_(True)
                if self.unfrozen == 0:  # pooler/final norm go with the top layer
                    for name, param in parts.other_backbone:
                        if name not in keep_frozen:
                            param.requires_grad_(True)
                self.unfrozen += 1
                self.history.append((state.global_step, self.unfrozen))
                log.info(
                    "gradual unfreezing: %d/%d units trainable at step %d",
                    self.unfrozen,
                    len(units),
                    state.global_step,
                )

        def on_epoch_begin(self, args, state, control, **kwargs):
            if unit == "epoch":
                self._advance(state, int((state.epoch or 0) + 1e-6))

        def on_step_begin(self, args, state, control, **kwargs):
            if unit == "step":
                self._advance(state, state.global_step)

    return GradualUnfreezing()


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
    """Freeze what the config says, build the optimizer's LR groups, and the unfreezing callback."""
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
    if frozen:
        log.info("frozen for the whole fine-tune: %d parameter tensors", len(frozen))
    callbacks = []
    if ft.unfreeze.every > 0:
        callbacks.append(
            gradual_unfreezing_callback(parts, ft.unfreeze.every, ft.unfreeze.unit, keep_frozen=frozen)
        )
        frozen_now = {n for n, p in parts.all() if not p.requires_grad}
        log.info(
            "gradual unfreezing: backbone starts frozen, one more layer every %d %s(s)",
            ft.unfreeze.every,
            ft.unfreeze.unit,
        )
    else:
        frozen_now = frozen
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
    trainable = sum(p.numel() for n, p in parts.all() if n not in frozen_now)
    run_log.log_metrics({"parameters_total": total, "parameters_trainable_at_start": trainable})
    run_log.set_tags({"finetune.lr_groups": ", ".join(f"{g['name']}={g['lr']:.2e}" for g in groups)})
    return optimizer, callbacks, {"parameters": total, "parameters_trainable_at_start": trainable}
