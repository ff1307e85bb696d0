"""The precision a run computes in: `precision=auto` resolved from what this machine runs natively."""

from __future__ import annotations

import functools
import logging
import time
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


# bf16 must beat fp32 clearly to be worth its casts and coarser rounding. Measured (2048^2 and
# 512^2 matmuls, bf16 over fp32): 4.0x on an AMD EPYC with avx512_bf16, 0.55-0.62x on an Intel Xeon
# with avx512_bf16 but no AMX, where a MiniLM training step took 2.90 s in bf16 against 1.95 s in
# fp32. The flag says what the CPU can execute, not whether it is faster.
BF16_MIN_SPEEDUP = 1.5


@functools.cache  # measured once per process: about 0.1 s
def cpu_bf16_matmul_speedup() -> float:
    """How many times faster one core of this CPU multiplies 512 x 512 matrices in bf16 than in
    fp32 (0 without native bf16, where emulation is known to be ~30x slower and is not timed).
    One thread, interleaved, warmed up, fastest of 9: with another job on the machine, two threads'
    median ratio ranged 0.2-1.0 on a CPU whose quiet ratio is 0.6; this measure stayed at 0.53-0.55."""
    if not cpu_has_native_bf16():
        return 0.0
    import torch

    # Its own generator: the run's seeded random stream must not move.
    generator = torch.Generator().manual_seed(0)
    pairs = [
        tuple(torch.randn(512, 512, generator=generator).to(dtype) for _ in range(2))
        for dtype in (torch.float32, torch.bfloat16)
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds: list[list[float]] = [[], []]
        for round_number in range(12):  # 3 warm-up rounds (kernel choice, caches), 9 timed
            for times, (left, right) in zip(seconds, pairs, strict=True):
                started = time.perf_counter()
                left @ right
                times.append(time.perf_counter() - started)
            if round_number == 0 and seconds[1][0] > 0.1:
                # Emulated after all (oneDNN held below the flag's ISA: ONEDNN_MAX_CPU_ISA=AVX2),
                # about 1 s a product: one tells.
                return round(seconds[0][0] / seconds[1][0], 2)
    finally:
        torch.set_num_threads(threads)
    fp32, bf16 = (min(times[3:]) for times in seconds)
    return round(fp32 / bf16, 2)


def cpu_prefers_bf16() -> bool:
    """Whether precision=auto computes in bf16 on this CPU: native, and clearly faster than fp32."""
    return cpu_bf16_matmul_speedup() >= BF16_MIN_SPEEDUP


def resolve_precision(requested: str, device: str) -> str:
    """The precision a run actually uses. auto: bf16 where the hardware executes it natively and
    faster than fp32 (CUDA devices with bf16; CPUs with AVX512-BF16/AMX/Arm BF16 whose bf16
    matmuls measure at least BF16_MIN_SPEEDUP times fp32's), fp16 with loss scaling on CUDA devices
    without bf16 (Volta, Turing: tensor cores), else fp32. An explicit choice is kept; bf16 on a
    CPU that emulates it, or runs it slower than fp32, runs with one warning."""
    import torch

    cuda = device == "cuda"
    if requested == "auto":
        if cuda:
            if torch.cuda.is_bf16_supported():
                return "bf16"
            return "fp16" if torch.cuda.get_device_capability() >= (7, 0) else "fp32"
        return "bf16" if cpu_prefers_bf16() else "fp32"
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
    if requested == "bf16" and not cuda and not cpu_prefers_bf16():
        _warn_slow_bf16()
    return requested


@functools.cache  # one line per process, however many places resolve the precision
def _warn_slow_bf16() -> None:
    if not cpu_has_native_bf16():
        log.warning(
            "precision=bf16: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag), so it "
            "is emulated: expect %s; precision=auto picks fp32 here",
            EMULATED_BF16_SLOWDOWN,
        )
        return
    log.warning(
        "precision=bf16: this CPU multiplies bf16 matrices only %.2fx as fast as fp32 (measured "
        "now), so expect a slower run than in fp32; precision=auto picks fp32 here",
        cpu_bf16_matmul_speedup(),
    )
