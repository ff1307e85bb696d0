"""Value checks that types alone cannot express; run before any stage does work."""

from __future__ import annotations

import math
import re

from transferlab.config.freezing_checks import freezing_problems
from transferlab.errors import UserError
from transferlab.models.positions import checkpoint_positions

ENCODERS = ("bert", "torch_transformer")
DECODERS = ("gpt2", "llama", "torch_decoder")
POSITIVE = (
    "model.max_windows",
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
    "lm.generate.max_new_tokens",
    "lm.generate.temperature",
    "lm.generate.top_p",
    "lm.generate.repetition_penalty",
)
NON_NEGATIVE = (
    "train.steps",
    "train.lr",
    "finetune.weight_decay",
    "train.weight_decay",
    "finetune.freeze.layers",
    "finetune.unfreeze.every",
    "evaluate.misclassified_samples",
    "lm.generate.top_k",
    "checkpoint.every_steps",
    "runtime.dataloader_workers",
)
SEEDS = ("seed", "lm.generate.seed")  # numpy / torch take seeds in [0, 2**32 - 1]
FRACTIONS = (
    "data.validation_fraction",
    "data.test_fraction",
    "train.warmup_ratio",
    "finetune.warmup_ratio",
    "model.dropout",
)


_INVALID_CHOICE = re.compile(r"Invalid value '(.*)', expected one of \[(.*)\]")


def not_a_choice(err: Exception) -> str | None:
    """`key='value' is not one of a, b` when an OmegaConf error (or the one it wraps) refused a
    value of a choice field (the schema's StrEnums), else None."""
    for error in (err, err.__cause__):
        found = _INVALID_CHOICE.search(str(error)) if error is not None else None
        if found and getattr(error, "full_key", None):
            return f"{error.full_key}={found.group(1)!r} is not one of {found.group(2)}"
    return None


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check(cfg) -> None:
    """Raise UserError naming every invalid value of a typed config."""
    problems = []
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            problems.append(f"{key}={_get(cfg, key)} must be > 0")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            problems.append(f"{key}={_get(cfg, key)} must be >= 0")
    for key in SEEDS:
        if not 0 <= _get(cfg, key) <= 2**32 - 1:
            problems.append(f"{key}={_get(cfg, key)} must be in [0, 2**32 - 1 = {2**32 - 1}]")
    for key in FRACTIONS:
        if not 0 <= _get(cfg, key) < 1:
            problems.append(f"{key}={_get(cfg, key)} must be in [0, 1)")
    problems += _masking_problems(cfg) + _length_problems(cfg.model, cfg.task)
    data = cfg.data
    if data.validation_fraction <= 0 or data.test_fraction <= 0:
        problems.append("data.validation_fraction and data.test_fraction must both be > 0")
    if data.validation_fraction + data.test_fraction >= 0.9:
        problems.append("data.validation_fraction + data.test_fraction must leave >= 10% to train")
    if data.max_per_label is not None and data.max_per_label < 3:
        problems.append("data.max_per_label must be >= 3 (one example per split) or null")
    problems += _data_source_problems(data)
    # Stricter than the tokenizers' own limit (stride < max_length - special tokens), which panics.
    stride, max_length = cfg.model.window_stride, cfg.model.max_length
    if stride is not None and not 0 <= 2 * stride < max_length:
        problems.append(
            f"model.window_stride={stride} must be >= 0 and < model.max_length / 2 = "
            f"{max_length / 2:g}: neighbouring windows share fewer than half their tokens"
        )
    if cfg.model.init == "scratch" and cfg.model.hidden_size % cfg.model.num_heads:
        problems.append("model.hidden_size must be a multiple of model.num_heads")
    if cfg.finetune.layer_lr_decay > 1:
        problems.append("finetune.layer_lr_decay must be in (0, 1]: lower layers learn slower")
    if cfg.model.tokenizer == "train" and cfg.model.init != "scratch":
        problems.append(
            "model.tokenizer=train needs model.init=scratch: pretrained weights come "
            "with their own vocabulary"
        )
    if cfg.model.tokenizer == "train" and cfg.model.vocab_size < 100:
        problems.append("model.vocab_size must be >= 100 for a trained tokenizer")
    problems += freezing_problems(cfg)
    if cfg.runtime.threads is not None and cfg.runtime.threads < 1:
        problems.append(f"runtime.threads={cfg.runtime.threads} must be >= 1 or null")
    for kind in ("attention_dropout", "hidden_dropout"):
        dropout = cfg.finetune[kind]
        if dropout is not None and not 0 <= dropout < 1:
            problems.append(f"finetune.{kind}={dropout} must be in [0, 1) or null")
    if cfg.finetune.early_stopping_patience < 1:
        problems.append("finetune.early_stopping_patience must be >= 1")
    if cfg.task == "causal_lm" and cfg.sweep.objective != "best_validation_loss":
        problems.append(
            "task=causal_lm has no accuracy to sweep on: use sweep.objective="
            "best_validation_loss sweep.direction=minimize"
        )
    if cfg.sweep.objective.endswith("_loss") != (cfg.sweep.direction == "minimize"):
        problems.append(
            f"sweep.direction={cfg.sweep.direction} does not suit sweep.objective="
            f"{cfg.sweep.objective}: losses are minimized, accuracies maximized"
        )
    from transferlab.tracking.identity import URL_PASSWORD

    if cfg.tracking.uri and URL_PASSWORD.search(cfg.tracking.uri):
        problems.append(
            "tracking.uri holds a password, and params.yaml is committed and logged: set "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
            "in the environment instead"
        )
    problems += _causal_lm_problems(cfg)
    if len(problems) == 1:
        raise UserError(f"invalid config: {problems[0]}")
    if problems:
        raise UserError("invalid config:\n  " + "\n  ".join(problems))


def _causal_lm_problems(cfg) -> list[str]:
    """The task and the model must fit together: encoders classify, decoders write."""
    problems = []
    model, lm = cfg.model, cfg.lm
    scratch = model.init == "scratch"
    if cfg.task == "causal_lm":
        if scratch and model.arch not in DECODERS:
            problems.append(
                f"task=causal_lm needs a decoder: model.arch={model.arch} is an encoder "
                "(use model=scratch_gpt or model=torch_decoder, or model.arch="
                f"{'|'.join(DECODERS)})"
            )
        if not scratch and "minilm" in model.name_or_path.lower():
            problems.append(
                "task=causal_lm needs a decoder language model: MiniLM is an encoder "
                "(use model=smollm2, model=scratch_gpt or model=torch_decoder)"
            )
    else:
        if scratch and model.arch in DECODERS:
            problems.append(
                f"model.arch={model.arch} is a decoder language model: use task=causal_lm, "
                "or an encoder (bert, torch_transformer) for task=classification"
            )
        if not scratch and model.name_or_path.endswith(".gguf"):
            problems.append(
                f"model.name_or_path={model.name_or_path!r} is a GGUF decoder language model: "
                "use it with task=causal_lm"
            )
    for key in ("max_train_blocks", "max_eval_blocks"):
        value = getattr(lm, key)
        if value is not None and value < 1:
            problems.append(f"lm.{key}={value} must be >= 1 or null")
    if not lm.generate.prompts and cfg.task == "causal_lm":
        problems.append("lm.generate.prompts is empty: give at least one prompt")
    if lm.generate.top_p > 1:
        problems.append(f"lm.generate.top_p={lm.generate.top_p} must be in (0, 1]")
    return problems


def _data_source_problems(data) -> list[str]:
    """Only data.source=files (data=files, data=text) reads data.path and the column names; the
    built-in corpus ignores them, which hid a forgotten `data=files`."""
    from transferlab.config.schema import DataConfig
    from transferlab.data.sources import READERS

    *kinds, last = READERS
    readable = f"a {', '.join(kinds)} or {last} file, or a folder of .txt files"
    if data.source == "files":
        return [] if data.path else [f"data=files needs data.path ({readable})"]
    ignored = [f"data.path={data.path!r}"] if data.path else []
    ignored += [
        f"data.{key}={getattr(data, key)!r}"
        for key in ("text_column", "label_column")
        if getattr(data, key) != getattr(DataConfig, key)
    ]
    if not ignored:
        return []
    return [
        f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored by data.source="
        f"{data.source} (the built-in BBC News corpus): add data=files to read data.path "
        f"({readable}), or data=text for unlabelled text"
    ]


def _masking_problems(cfg) -> list[str]:
    """train.mlm_probability: the share of tokens masked-LM training hides and predicts. A batch in
    which no token is masked has no loss term (0 / 0: a nan loss), so the share must make that
    unlikely over the run: at most a 1% chance that any of the train.steps batches of full-length
    texts (max_length - 2 maskable tokens each: [CLS] and [SEP] are never masked) masks none."""
    p, train, length = cfg.train.mlm_probability, cfg.train, cfg.model.max_length
    if not 0 < p < 1:
        return [
            f"train.mlm_probability={p} must be in (0, 1): the share of tokens masked-LM "
            "training hides and predicts"
        ]
    if cfg.task != "classification" or train.steps < 1 or train.batch_size < 1 or length < MIN_LENGTH:
        return []  # causal_lm predicts next tokens; 0 steps trains nothing; the rest is refused above
    tokens = train.batch_size * (length - 2)
    risk = 1 - (1 - (1 - p) ** tokens) ** train.steps
    if risk <= 0.01:
        return []
    lowest = math.ceil((1 - (1 - 0.99 ** (1 / train.steps)) ** (1 / tokens)) * 1000) / 1000
    return [
        f"train.mlm_probability={p} is too low: a batch with no masked token has a nan loss, and "
        f"{train.steps} steps of train.batch_size={train.batch_size} x model.max_length={length} "
        f"tokens have a {risk:.0%} chance of one; use >= {lowest:g}"
    ]


# [CLS] and [SEP] (or BOS / EOS) take 2 tokens of every sequence: 2 leaves no text, 1 makes tokenizers
# skip truncating; model.window_stride (< max_length / 2) must be < max_length - special tokens too.
MIN_LENGTH = 8


def _length_problems(model, task) -> list[str]:
    length = model.max_length
    if length < MIN_LENGTH:
        what = "the block length of task=causal_lm" if task == "causal_lm" else "[CLS] and [SEP] included"
        return [
            f"model.max_length={length} must be >= {MIN_LENGTH} ({what}): special tokens take 2 "
            "of every sequence's tokens, and a shorter one holds (almost) no text"
        ]
    # init=scratch sizes its positions from max_length (models/build.py, tasks/causal_lm/model.py).
    found = checkpoint_positions(model.name_or_path) if model.init == "pretrained" else None
    if found and length > found[0]:
        return [
            f"model.max_length={length} is more than {model.name_or_path} reads ({found[1]} in its "
            f"config.json): use model.max_length <= {found[0]}"
        ]
    return []
