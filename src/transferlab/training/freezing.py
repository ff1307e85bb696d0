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
