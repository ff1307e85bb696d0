"""Device, precision, seeding and determinism, and the process's place in a distributed launch:
the few facts about the machine every stage needs."""

from __future__ import annotations

import logging
import os

from transferlab.errors import UserError
from transferlab.training.precision import cpu_bf16_matmul_speedup, cpu_has_native_bf16, resolve_precision

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


DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")  # the cuBLAS workspace settings that make it deterministic


def apply_repro(cfg) -> dict[str, str]:
    """Seed everything and set the determinism switches `cfg.repro` asks for; returns them, for
    the run's tags. strict: deterministic algorithms (an op without one raises), cuDNN
    deterministic, no TF32, the cuBLAS workspace pinned: reruns are bit-identical on one machine.
    New tensors are not filled with NaN first (PyTorch's default under deterministic algorithms,
    a guard against ops that read memory they never wrote): reruns stay bit-identical without
    it (tests/test_reruns.py), and it is a cost on every step (docs/performance.md).
    fast: seeds only, with cudnn.benchmark and (when runtime.tf32) TF32 matmuls allowed (GPU
    speed; small run-to-run differences). DataLoader workers are seeded by Trainer (seed_worker)
    and the order by data_seed."""
    import torch

    seed_everything(cfg.seed)
    strict = cfg.repro == "strict"
    tf32 = not strict and cfg.runtime.tf32
    if strict and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in DETERMINISTIC_CUBLAS:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS[0]  # read when cuBLAS starts
    torch.use_deterministic_algorithms(strict)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = strict
    torch.backends.cudnn.benchmark = not strict
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    settings = {
        "repro": cfg.repro,
        "repro.seed": cfg.seed,
        "repro.deterministic_algorithms": strict,
        "repro.fill_uninitialized_memory": False,
        "repro.cudnn_benchmark": not strict,
        "repro.tf32": tf32,
        "repro.cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
    }
    log.info("repro=%s: %s", cfg.repro, ", ".join(f"{k}={v}" for k, v in settings.items()))
    return {k: str(v) for k, v in settings.items()}


def world_size() -> int:
    """Processes in this launch (torchrun sets WORLD_SIZE); 1 for a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Global rank 0 (or a plain run): the one process of the launch, over every node, that logs to
    MLflow and writes outputs. Not LOCAL_RANK: with two nodes each has a local rank 0 (torchrun's
    LOCAL_RANK only picks the GPU, which accelerate does)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_restarts() -> None:
    """torchrun --max-restarts > 0 with the rendezvous store shared with the workers (torch's default
    for c10d) is refused before any work: torch never clears that store between restarts and the
    process group keys are not per attempt, so a restarted group reads the addresses of the dead
    one (measured with torch 2.13: rank 1 connected to the killed rank 0's port and failed, and the
    other node's worker was still waiting for it 7 minutes later). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    gives every group a fresh store (pytorch/pytorch#135712)."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise UserError(
            f"torchrun --max-restarts={restarts} needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in "
            "the environment of every torchrun: without it a restarted group reads the "
            "addresses of the processes that died and fails or hangs (pytorch/pytorch#135712)"
        )


def _process_group():
    """torch.distributed when this process is in an initialized group (TrainingArguments starts it
    under torchrun), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    """Wait until every process of the launch gets here (nothing to wait for in one process)."""
    dist = _process_group()
    if dist is not None:
        dist.barrier()


def gathered(value) -> list:
    """`value` from every process of the launch, by global rank ([value] in one process)."""
    dist = _process_group()
    if dist is None:
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def per_device(batch_size: int) -> int:
    """The config's batch sizes are global: each of N processes takes batch_size / N, so one step
    sees the same examples however many processes share it."""
    world = world_size()
    if batch_size % world:
        raise UserError(
            f"the batch size {batch_size} cannot be split evenly over {world} processes: "
            f"set train.batch_size / finetune.batch_size to a multiple of {world}, or "
            "change the number of processes (torchrun --nnodes x --nproc-per-node)"
        )
    return batch_size // world


def machine_tags(cfg) -> dict[str, str]:
    """What a stage run records about where it ran: the device, the precision asked for and the
    one it resolved to and why (the same params.yaml can resolve differently on another machine)."""
    device = resolve_device(cfg.device)
    tags = {
        "device": device,
        "precision": resolve_precision(cfg.precision, device),
        "precision.requested": cfg.precision,
        "cpu.native_bf16": str(cpu_has_native_bf16()),
    }
    if device == "cpu":
        tags["cpu.bf16_matmul_speedup"] = str(cpu_bf16_matmul_speedup())
    return tags


def trainer_device_args(device: str, precision: str) -> dict:
    """TrainingArguments entries for the chosen device and the configured precision."""
    resolved = resolve_precision(precision, device)
    return {"use_cpu": device == "cpu", "bf16": resolved == "bf16", "fp16": resolved == "fp16"}


def keep_freed_memory() -> bool:
    """glibc malloc: no mmap for large blocks, no trimming of the heap. By default glibc hands
    large blocks (activations, attention maps, the embedding gradient) back to the system when
    they are freed, so each step page-faults them in again: up to 2x slower steps in
    `step_levers.py --malloc-rounds`, never faster (docs/performance.md). False where it does
    not apply."""
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters, from <malloc.h>
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False


PADDING_LIMIT = 0.2  # group by length when random batches would be more than this share padding


def padding_share(lengths: list[int], batch_size: int, seed: int) -> float:
    """The share of the tokens a training epoch would spend on padding with random batches padded
    to their longest example (DataCollatorWithPadding), for these example lengths."""
    import random

    order = list(lengths)
    random.Random(seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(max(batch) * len(batch) for batch in batches)
    return 1 - sum(order) / padded if padded else 0.0


def sampling_strategy(runtime, lengths: list[int] | None, batch_size: int, seed: int) -> str:
    """Trainer's train_sampling_strategy. runtime.group_by_length null (auto): group only when random
    batches would be mostly padding (short texts of varied length), since grouping makes batches
    less random (BBC, all 128 tokens: 2.2 points lower after one epoch, nothing saved)."""
    grouped = runtime.group_by_length
    if grouped is None:
        share = padding_share(lengths, batch_size, seed) if lengths else 0.0
        grouped = share > PADDING_LIMIT
        log.info(
            "runtime.group_by_length=auto: random batches would be %.0f%% padding -> %s",
            100 * share,
            "grouped by length" if grouped else "random",
        )
    return "group_by_length" if grouped else "random"


def speed_arguments(runtime, device: str, sampling: str = "random") -> dict:
    """TrainingArguments entries for the speed levers of `runtime` (the config's runtime group);
    the process-wide ones (threads, malloc) are set here too."""
    if runtime.threads:
        import torch

        torch.set_num_threads(runtime.threads)
    if runtime.reuse_freed_memory and not keep_freed_memory():
        log.info("runtime.reuse_freed_memory: this C library has no glibc mallopt; left as it is")
    cuda = device == "cuda"
    return {
        "dataloader_num_workers": runtime.dataloader_workers,
        "dataloader_persistent_workers": runtime.dataloader_workers > 0,
        "dataloader_pin_memory": cuda and runtime.pin_memory,
        "train_sampling_strategy": sampling,
        "torch_compile": runtime.compile,  # TF32 is set with the determinism switches (apply_repro)
    }


def adamw_options(runtime) -> dict:
    """torch.optim.AdamW keyword arguments for the configured kernel."""
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[
        runtime.optimizer
    ]


def adamw(runtime, lr: float):
    """(class, kwargs) for Trainer(optimizer_cls_and_kwargs=...): Trainer's own parameter groups
    (no weight decay on biases and norms) with the configured AdamW kernel."""
    import torch

    return torch.optim.AdamW, {"lr": lr, **adamw_options(runtime)}


def training_arguments(cfg, output_dir: str, lengths: list[int] | None = None, **overrides):
    """TrainingArguments shared by every training stage: seeds, device, precision, logging.
    `lengths`: the training examples' token counts, for runtime.group_by_length=auto (None: the
    examples all have one length, e.g. packed blocks)."""
    from transformers import TrainingArguments

    device = resolve_device(cfg.device)
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if key in overrides:
            overrides[key] = per_device(overrides[key])
    sampling = sampling_strategy(
        cfg.runtime, lengths, overrides.get("per_device_train_batch_size", 8), cfg.seed
    )
    settings = {
        "output_dir": output_dir,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "report_to": "none",  # transferlab.tracking logs to MLflow through a callback
        "logging_strategy": "steps",
        "logging_steps": 10,
        "logging_first_step": True,
        "save_strategy": "no",
        # A NaN step loss must reach the log (stop_on_nan), not be papered over with the average.
        "logging_nan_inf_filter": False,
        **trainer_device_args(device, cfg.precision),
        **speed_arguments(cfg.runtime, device, sampling),
    }
    if world_size() > 1:  # set only under torchrun: in a single process it fails (no process group)
        settings["ddp_backend"] = "gloo" if device == "cpu" else "nccl"
        # Measured (transformers 5.23, gloo): averaging the token count across processes doubled
        # every loss and gradient with 2 processes; each process's plain mean, averaged by DDP,
        # matches one process.
        settings["average_tokens_across_devices"] = False
    return TrainingArguments(**(settings | overrides))
