"""Compose-time checks of finetune.freeze and finetune.unfreeze: the combinations that would freeze
less than asked, or unfreeze nothing, decided from the config alone. What needs the model's parameter
names (a pattern that matches none, a pretrained checkpoint's layer count, nothing left to train) is
checked when the finetune stage loads the model (training/freezing.py, training/techniques.py)."""

from __future__ import annotations

import re


def freezing_problems(cfg) -> list[str]:
    problems = []
    freeze, unfreeze, epochs = cfg.finetune.freeze, cfg.finetune.unfreeze, cfg.finetune.epochs
    for pattern in freeze.patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            problems.append(f"finetune.freeze.patterns: {pattern!r} is not a regex ({err})")
    # init=scratch builds model.num_layers layers; a pretrained checkpoint's count is checked at load.
    if cfg.model.init == "scratch" and freeze.layers > cfg.model.num_layers > 0:
        problems.append(
            f"finetune.freeze.layers={freeze.layers} is more than the model's model.num_layers="
            f"{cfg.model.num_layers}: use 0..{cfg.model.num_layers} (finetune.freeze.backbone=true "
            "freezes every layer and the embeddings)"
        )
    if unfreeze.every > 0 and freeze.backbone:
        problems.append(
            f"finetune.unfreeze.every={unfreeze.every} contradicts finetune.freeze.backbone=true, which "
            "keeps the backbone frozen for the whole fine-tune: gradual unfreezing already starts with "
            "the backbone frozen, so drop finetune.freeze.backbone (or unfreeze.every)"
        )
    if unfreeze.every > 0 and unfreeze.unit == "epoch" and unfreeze.every >= epochs > 0:
        problems.append(
            f"finetune.unfreeze.every={unfreeze.every} epochs with finetune.epochs={epochs}: no layer "
            f"would be unfrozen during the fine-tune (the first opens as epoch {unfreeze.every + 1} "
            "begins); use "
            "finetune.unfreeze.every < finetune.epochs, or finetune.unfreeze.unit=step"
        )
    return problems
