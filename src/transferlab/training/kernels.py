"""Which implementation of attention and of dropout a model runs: the same math, chosen for speed
on the device and precision of the run (runtime.attention, runtime.fast_dropout)."""

from __future__ import annotations

import logging

from transferlab.models import lean_attention  # torch and transformers load inside it, on use
from transferlab.training.precision import resolve_precision
from transferlab.training.runtime import resolve_device

log = logging.getLogger(__name__)


def attention_kernel(runtime, device: str, precision: str) -> str:
    """The attention implementation `runtime.attention` asks for on this device, in the precision
    the run resolved to."""
    if runtime.attention != "auto":
        return runtime.attention
    # Measured, MiniLM training steps on 2 cores (docs/performance.md): under bf16 matmuls + softmax
    # beat sdpa by 1.36x or more (CPU flash attention's bf16 backward is slow at these sizes), and
    # lean_eager beats eager (1.03x at 32 x 128, 1.51x at 8 x 512 with padding); in fp32
    # sdpa tied on an AVX2 AMD EPYC and won on an AVX-512 Intel Xeon (1.08x at 32 x 128, 1.37x at
    # 8 x 512). On CUDA the flash kernels win.
    return lean_attention.NAME if device == "cpu" and precision == "bf16" else "sdpa"


def use_attention(net, cfg) -> str:
    """Switch a Hugging Face model to the configured attention kernel (same weights and math up to
    rounding) and return the kernel the model now runs. torch.nn models (torch_transformer,
    torch_decoder) have one kernel and are left."""
    device = resolve_device(cfg.device)
    kernel = attention_kernel(cfg.runtime, device, resolve_precision(cfg.precision, device))
    if kernel == lean_attention.NAME:
        lean_attention.register()
    try:
        net.set_attn_implementation(kernel)
    except ValueError as err:  # a model whose code has one kernel (transformers says which)
        log.info(
            "runtime.attention: %s keeps its own attention (%s)", type(net).__name__, str(err).split(".")[0]
        )
        return "model's own"
    return net.config._attn_implementation


def use_kernels(net, cfg) -> dict[str, str]:
    """Switch `net` to the configured attention and dropout kernels; the run's tags for them."""
    device = resolve_device(cfg.device)
    dropout = "torch"
    if cfg.runtime.fast_dropout and device == "cpu":
        from transferlab.models.packed_dropout import use_packed_dropout

        if use_packed_dropout(net):
            dropout = "packed"
    return {"attention": use_attention(net, cfg), "dropout": dropout}
