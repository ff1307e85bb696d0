"""lean_eager attention (runtime.attention, auto's choice for bf16 on a CPU): Hugging Face's eager
results and gradients, in fewer passes, with the padding mask kept in the scores' dtype."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from conftest import make_config
from transferlab.models import lean_attention
from transferlab.training import kernels

PADDED = torch.tensor([[1] * 12, [1] * 7 + [0] * 5, [1] * 3 + [0] * 9])


def outputs_and_gradients(net, kernel: str, **inputs):
    """Output and parameter gradients of one forward/backward with `kernel` (dropout off)."""
    net.set_attn_implementation(kernel)
    net.zero_grad()
    out = net(**inputs)
    first = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits
    (first * PADDED[..., None]).pow(2).sum().backward()  # padded positions carry no loss
    return first.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_it_gives_eager_results_and_gradients(model):
    lean_attention.register()
    torch.manual_seed(0)
    if model == "bert":
        config = BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
        net = BertModel(config)
    else:  # a decoder: the causal mask, and GPT-2's own scaling passed in
        config = GPT2Config(
            vocab_size=50, n_embd=32, n_layer=2, n_head=4, scale_attn_by_inverse_layer_idx=True
        )
        net = GPT2LMHeadModel(config)
    net.eval()
    inputs = {"input_ids": torch.randint(0, 50, PADDED.shape), "attention_mask": PADDED}
    eager, eager_grads = outputs_and_gradients(net, "eager", **inputs)
    lean, lean_grads = outputs_and_gradients(net, lean_attention.NAME, **inputs)
    sdpa, _ = outputs_and_gradients(net, "sdpa", **inputs)
    kept = PADDED.bool()
    assert torch.allclose(lean[kept], eager[kept], atol=1e-5)
    assert torch.allclose(sdpa[kept], eager[kept], atol=1e-5)  # the reference agrees with itself
    assert eager_grads.keys() == lean_grads.keys()
    for name, grad in eager_grads.items():
        assert torch.allclose(lean_grads[name], grad, atol=1e-5), name


def test_under_bf16_autocast_the_scores_stay_bf16_and_padding_gets_no_weight():
    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 4, 12, 8, dtype=torch.bfloat16) for _ in range(3))
    # Hugging Face's fp32 additive padding mask; the third row of the first sequence masked everywhere
    lowest = torch.finfo(torch.float32).min
    mask = torch.zeros(3, 1, 12, 12).masked_fill(~PADDED.bool()[:, None, None, :], lowest)
    mask[0, 0, 2] = lowest
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, weights = lean_attention.lean_eager_attention(
            torch.nn.Module().eval(), query, key, value, mask
        )
    assert weights.dtype == output.dtype == torch.bfloat16  # not promoted to fp32 by the mask
    assert torch.isfinite(weights).all() and torch.isfinite(output).all()
    assert torch.all(weights[1, :, :, 7:] == 0) and torch.all(weights[2, :, :, 3:] == 0)
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(3, 4, 12), atol=0.02, rtol=0)


def test_the_kernel_is_chosen_by_name_or_by_auto_for_bf16_on_a_cpu():
    from transformers import AutoModelForSequenceClassification

    auto = make_config().runtime
    assert kernels.attention_kernel(auto, "cpu", "bf16") == "lean_eager"
    assert kernels.attention_kernel(auto, "cpu", "fp32") == "sdpa"
    net = AutoModelForSequenceClassification.from_config(
        BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    assert kernels.use_attention(net, make_config("runtime.attention=lean_eager")) == "lean_eager"
    assert net.config._attn_implementation == "lean_eager"
    assert "lean_eager" not in net.config.to_json_string()  # a saved model loads without this package
