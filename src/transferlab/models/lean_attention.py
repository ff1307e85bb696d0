"""Eager attention with fewer passes over the attention scores: the kernel runtime.attention=auto
picks for a CPU computing in bf16 (training/kernels.py). Hugging Face's eager math, up to rounding."""

from __future__ import annotations

NAME = "lean_eager"


def lean_eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Hugging Face's eager attention (transformers/models/bert/modeling_bert.py) with two changes,
    measured in docs/performance.md:
    - the query is scaled, not the scores: at 128 tokens and 32 dimensions a head, a pass over a
      quarter of the data, forward and backward, and the product gets a contiguous operand;
    - the padding mask is added in the scores' dtype. Hugging Face builds it in the embeddings'
      fp32, so under bf16 autocast the sum, the softmax and its backward would all run in fp32."""
    import torch
    from torch.nn import functional as F

    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        if attention_mask.dtype != scores.dtype:
            # fp32's lowest value rounds to -inf in bf16, and a row masked everywhere would be NaN
            attention_mask = attention_mask.clamp(min=torch.finfo(scores.dtype).min).to(scores.dtype)
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def register() -> str:
    """Make NAME a kernel any Hugging Face model can switch to (set_attn_implementation), with the
    eager kernel's additive masks; returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, lean_eager_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
