"""The precision a run computes in: `precision=auto` resolved from what this machine runs natively."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from transferlab.errors import UserError

log = logging.getLogger(__name__)


# Measured on a 2-core AMD EPYC with AVX2 only (bf16 emulated): one MiniLM step of 32 x 128 tokens
# took 2.0 s in fp32 and 59.5 s under bf16 autocast; a 2048^2 matmul 178 vs 0.3 GFLOP/s.
EMULATED_BF16_SLOWDOWN = "about 30x slower than fp32 (measured on an AVX2-only CPU)"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (x86 `flags`, Arm `Features`); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16() -> bool:
    """bf16 matmuls in hardware: x86 AVX512-BF16 or AMX-BF16, Arm's BF16 extension. Without them
    oneDNN emulates bf16 (measured ~30x slower than fp32 on AVX2); macOS and others: False."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(requested: str, device: str) -> str:
    """The precision a run actually uses. auto: bf16 where the hardware executes it natively
    (CUDA devices with bf16, CPUs with AVX512-BF16/AMX/Arm BF16), fp16 with loss scaling on
    CUDA devices without bf16 (Volta, Turing: tensor cores), else fp32. An explicit choice is kept;
    bf16 on a CPU that emulates it runs, with one warning."""
    import torch

    cuda = device == "cuda"
    if requested == "auto":
        if cuda:
            if torch.cuda.is_bf16_supported():
                return "bf16"
            return "fp16" if torch.cuda.get_device_capability() >= (7, 0) else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(
            "precision=bf16 but this GPU has no bf16 support: use precision=auto (fp16 "
            "with loss scaling here) or precision=fp32"
        )
    if requested == "fp16" and not cuda:
        raise UserError(
            "precision=fp16 needs a CUDA device (mixed precision with loss scaling): "
            "use precision=auto or precision=fp32 on a CPU"
        )
    if requested == "bf16" and not cuda and not cpu_has_native_bf16():
        _warn_emulated_bf16()
    return requested


@functools.cache  # one line per process, however many places resolve the precision
def _warn_emulated_bf16() -> None:
    log.warning(
        "precision=bf16: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag), so it "
        "is emulated: expect %s; precision=auto picks fp32 here",
        EMULATED_BF16_SLOWDOWN,
    )
