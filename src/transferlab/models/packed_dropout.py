"""Dropout whose CPU masks are drawn four entries per random number: the same layer as nn.Dropout,
faster to train on a CPU (runtime.fast_dropout)."""

from __future__ import annotations

import torch
from torch import nn

LEVELS = 2**16  # a mask entry is one 16-bit random number, so p is rounded to a multiple of 2^-16


class PackedDropout(nn.Dropout):
    """nn.Dropout whose CPU masks come from 64-bit random words, four 16-bit entries per word.
    torch's CPU dropout draws one random number per element (bernoulli_) on one thread: at MiniLM's
    32 x 128 x 384 hidden states 7.7 ms a mask against 1.3 ms for the words, and its masks were a
    fifth of a bf16 training step (docs/performance.md). The same distribution (p within 2^-17)
    from the same seeded CPU generator; CUDA tensors keep torch's fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * LEVELS)  # entries whose level is below this are zeroed
        if not self.training or x.device.type != "cpu" or self.inplace or dropped in (0, LEVELS):
            return super().forward(x)
        count = x.numel()
        words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        levels = words.view(torch.int16)[:count].view(x.shape)  # int16 levels run from -2^15
        keep = levels >= dropped - LEVELS // 2
        # Kept entries are scaled by 1 / (1 - p'), p' the rounded p, so the expectation stays x.
        return x * (keep.to(x.dtype) * (LEVELS / (LEVELS - dropped)))


def use_packed_dropout(net: nn.Module) -> int:
    """Replace every plain nn.Dropout module of `net` with PackedDropout (same p); how many were
    replaced. Dropout called as a function (attention maps in most Hugging Face models) stays
    torch's: finetune.attention_dropout is 0 by default."""
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, PackedDropout(child.p, child.inplace))
                replaced += 1
    return replaced
