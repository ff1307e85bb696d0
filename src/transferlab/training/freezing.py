"""Freezing and gradual unfreezing: which of a model's parameters train, and when.

Works for any Hugging Face encoder (BERT-likes, the torch.nn encoder) or decoder (GPT-2, Llama,
the torch.nn decoder): the backbone is `model.base_model`, its layers the longest `nn.ModuleList`
inside it, the head everything else (nothing for a decoder whose LM head is tied to its input
embeddings).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from transferlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """A model's parameters by role, each as (name, parameter) pairs; layers lowest first."""

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
    """Turn off gradients for the chosen parameters; return their names. A layer count beyond the
    model's or a pattern that matches no parameter is refused: either would freeze less than asked."""
    if layers > len(parts.layers):
        raise UserError(
            f"finetune.freeze.layers={layers} is more than the model's {len(parts.layers)} layers: use "
            f"0..{len(parts.layers)} (finetune.freeze.backbone=true freezes every layer and the embeddings)"
        )
    chosen = []
    if backbone:  # embeddings and every layer; a pooler or final norm on top still trains
        chosen += parts.embeddings + [p for layer in parts.layers for p in layer]
    else:
        if embeddings:
            chosen += parts.embeddings
        for layer in parts.layers[:layers]:
            chosen += layer
    for pattern in patterns:
        compiled = re.compile(pattern)
        matched = [(n, p) for n, p in parts.all() if compiled.search(n)]
        if not matched:
            names = [n for n, _ in parts.all()]
            examples = ", ".join(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))
            raise UserError(
                f"finetune.freeze.patterns: {pattern!r} matches no parameter of the model (a regex "
                f"searched in names such as {examples})"
            )
        chosen += matched
    names = []
    for name, param in chosen:
        if param.requires_grad:
            param.requires_grad_(False)
            names.append(name)
    return names


def unfreeze_schedule(parts: Parts, keep_frozen: set[str]) -> list[list]:
    """Units of gradual unfreezing, in order: top layer (with a pooler or final norm), ..., lowest
    layer, then embeddings; without the parameters frozen for the whole fine-tune, and without units
    left empty by them, so the count in the log is the count that really opens."""
    units = [list(layer) for layer in reversed(parts.layers)] or [[]]
    units[0] += parts.other_backbone
    units.append(parts.embeddings)
    units = [[(n, p) for n, p in unit if n not in keep_frozen] for unit in units]
    return [unit for unit in units if unit]


def gradual_unfreezing_callback(parts: Parts, every: int, unit: str, keep_frozen: set[str]):
    """A Trainer callback: the backbone starts frozen; every `every` epochs (or steps) one more
    unit is unfrozen, top down (ULMFiT). Parameters in `keep_frozen` stay frozen throughout.
    When nothing outside the backbone trains (a decoder's LM head is its tied input embeddings,
    which open last) the top unit starts trainable: a model with nothing to train cannot step."""
    from transformers import TrainerCallback

    units = unfreeze_schedule(parts, keep_frozen)
    if not units:
        raise UserError(
            f"finetune.unfreeze.every={every} has nothing to unfreeze: finetune.freeze keeps every "
            "backbone parameter frozen for the whole fine-tune"
        )
    for _, param in [p for u in units for p in u]:
        param.requires_grad_(False)
    head_trains = any(p.requires_grad for n, p in parts.head)

    class GradualUnfreezing(TrainerCallback):
        def __init__(self):
            self.unfrozen = 0
            self.history: list[tuple[int, int]] = []  # (global step, units unfrozen)
            self.opened_at_start = 0 if head_trains else 1
            self._open(self.opened_at_start, 0)

        def _open(self, target: int, step: int) -> None:
            while self.unfrozen < min(len(units), target):
                for _, param in units[self.unfrozen]:
                    param.requires_grad_(True)
                self.unfrozen += 1
                self.history.append((step, self.unfrozen))
                log.info(
                    "gradual unfreezing: %d/%d units trainable at step %d", self.unfrozen, len(units), step
                )

        def on_train_begin(self, args, state, control, **kwargs):
            if unit == "step" and state.max_steps <= every and len(units) > self.unfrozen:
                log.warning(
                    "finetune.unfreeze.every=%d steps, but the fine-tune runs %d steps: no more layers "
                    "will be unfrozen (use a smaller finetune.unfreeze.every)",
                    every,
                    state.max_steps,
                )

        def on_epoch_begin(self, args, state, control, **kwargs):
            if unit == "epoch":
                elapsed = int((state.epoch or 0) + 1e-6)
                self._open(self.opened_at_start + elapsed // every, state.global_step)

        def on_step_begin(self, args, state, control, **kwargs):
            if unit == "step":
                self._open(self.opened_at_start + state.global_step // every, state.global_step)

    return GradualUnfreezing()
