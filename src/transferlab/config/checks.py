"""Value checks that types alone cannot express; run before any stage does work."""

from __future__ import annotations

import re

from transferlab.errors import UserError

CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("fp32", "bf16"),
    "data.source": ("bbc_news", "files"),
    "model.init": ("pretrained", "scratch"),
    "model.arch": ("bert", "torch_transformer"),
    "model.tokenizer": ("pretrained", "train"),
    "finetune.unfreeze.unit": ("epoch", "step"),
    "sweep.objective": ("best_validation_accuracy", "best_validation_loss"),
    "sweep.direction": ("maximize", "minimize"),
}
POSITIVE = (
    "model.max_length",
    "model.hidden_size",
    "model.num_layers",
    "model.num_heads",
    "model.intermediate_size",
    "train.batch_size",
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.backbone_lr",
    "finetune.head_lr",
    "finetune.layer_lr_decay",
    "model.vocab_size",
    "evaluate.batch_size",
    "sweep.trials",
)
NON_NEGATIVE = ("seed", "train.steps", "train.lr", "finetune.weight_decay", "train.weight_decay",
                "finetune.freeze.layers", "finetune.unfreeze.every", "evaluate.misclassified_samples")
FRACTIONS = ("data.validation_fraction", "data.test_fraction", "train.mlm_probability",
             "train.warmup_ratio", "finetune.warmup_ratio", "model.dropout")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check(cfg) -> None:
    """Raise UserError naming every invalid value of a typed config."""
    problems = []
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            problems.append(f"{key}={_get(cfg, key)!r} is not one of {', '.join(allowed)}")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            problems.append(f"{key}={_get(cfg, key)} must be > 0")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            problems.append(f"{key}={_get(cfg, key)} must be >= 0")
    for key in FRACTIONS:
        if not 0 <= _get(cfg, key) < 1:
            problems.append(f"{key}={_get(cfg, key)} must be in [0, 1)")
    data = cfg.data
    if data.validation_fraction <= 0 or data.test_fraction <= 0:
        problems.append("data.validation_fraction and data.test_fraction must both be > 0")
    if data.validation_fraction + data.test_fraction >= 0.9:
        problems.append("data.validation_fraction + data.test_fraction must leave >= 10% to train")
    if data.max_per_label is not None and data.max_per_label < 3:
        problems.append("data.max_per_label must be >= 3 (one example per split) or null")
    if data.source == "files" and not data.path:
        problems.append("data=files needs data.path (a .csv, .jsonl or .parquet file)")
    if cfg.model.init == "scratch" and cfg.model.hidden_size % cfg.model.num_heads:
        problems.append("model.hidden_size must be a multiple of model.num_heads")
    if cfg.finetune.layer_lr_decay > 1:
        problems.append("finetune.layer_lr_decay must be in (0, 1]: lower layers learn slower")
    if cfg.model.tokenizer == "train" and cfg.model.init != "scratch":
        problems.append("model.tokenizer=train needs model.init=scratch: pretrained weights come "
                        "with their own vocabulary")
    if cfg.model.tokenizer == "train" and cfg.model.vocab_size < 100:
        problems.append("model.vocab_size must be >= 100 for a trained tokenizer")
    for pattern in cfg.finetune.freeze.patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            problems.append(f"finetune.freeze.patterns: {pattern!r} is not a regex ({err})")
    if cfg.finetune.early_stopping_patience < 1:
        problems.append("finetune.early_stopping_patience must be >= 1")
    if cfg.sweep.objective.endswith("_loss") != (cfg.sweep.direction == "minimize"):
        problems.append(f"sweep.direction={cfg.sweep.direction} does not suit sweep.objective="
                        f"{cfg.sweep.objective}: losses are minimized, accuracies maximized")
    if problems:
        raise UserError("invalid config:\n  " + "\n  ".join(problems))
