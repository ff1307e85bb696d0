"""PackedDropout (runtime.fast_dropout): nn.Dropout's distribution and gradient from fewer random
draws, swapped into real models, and recorded with the run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_config
from transferlab.models.packed_dropout import LEVELS, PackedDropout, use_packed_dropout
from transferlab.training import kernels


def test_it_drops_at_rate_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(64, 128, 96)
    out = PackedDropout(0.1)(x)
    kept = out != 0
    rounded_p = round(0.1 * LEVELS) / LEVELS
    # 786,432 draws: the drop rate's standard error is 0.00034
    assert (~kept).float().mean().item() == pytest.approx(0.1, abs=0.002)
    assert torch.all(out[kept] == 1 / (1 - rounded_p))
    assert out.mean().item() == pytest.approx(1.0, abs=0.003)
    # the masks are not reused: neighbouring rows and the next call differ
    assert not torch.equal(kept[0], kept[1])
    assert not torch.equal(kept, PackedDropout(0.1)(x) != 0)


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(8, 33, 7, requires_grad=True)  # 1,848 entries: not a multiple of four
    out = PackedDropout(0.3)(x)
    out.backward(torch.ones_like(out))
    assert torch.allclose(x.grad, out.detach() / x.detach())
    assert 0.25 < (x.grad == 0).float().mean().item() < 0.35


def test_it_is_seeded_like_torch_and_keeps_bf16():
    x = torch.randn(4, 16, 32).bfloat16()
    torch.manual_seed(7)
    first = PackedDropout(0.1)(x)
    torch.manual_seed(7)
    assert torch.equal(first, PackedDropout(0.1)(x))
    assert first.dtype == torch.bfloat16


def test_outside_training_and_at_the_ends_it_is_nn_dropout():
    x = torch.randn(4, 8)
    assert torch.equal(PackedDropout(0.1).eval()(x), x)
    assert torch.equal(PackedDropout(0.0)(x), x)
    assert torch.equal(PackedDropout(1.0)(x), torch.zeros_like(x))


def test_every_dropout_module_of_a_model_is_swapped():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1), nn.ReLU()))
    before = net.state_dict()
    assert use_packed_dropout(net) == 2
    assert [m.p for m in net.modules() if isinstance(m, PackedDropout)] == [0.2, 0.1]
    assert net.state_dict().keys() == before.keys()  # saved checkpoints do not change
    assert use_packed_dropout(net) == 0  # already swapped


def test_use_kernels_follows_runtime_fast_dropout():
    from transformers import BertConfig, BertForSequenceClassification

    def tiny_bert():
        config = BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        return BertForSequenceClassification(config)

    fast = tiny_bert()
    assert kernels.use_kernels(fast, make_config())["dropout"] == "packed"
    assert any(isinstance(m, PackedDropout) for m in fast.modules())
    fast.train()
    assert fast(input_ids=torch.randint(0, 50, (2, 5))).logits.shape == (2, 2)

    plain = tiny_bert()
    assert kernels.use_kernels(plain, make_config("runtime.fast_dropout=false"))["dropout"] == "torch"
    assert not any(isinstance(m, PackedDropout) for m in plain.modules())
