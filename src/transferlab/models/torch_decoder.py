"""A causal decoder assembled from plain `torch.nn` parts (token + position nn.Embedding, then
nn.TransformerEncoder layers run with a causal mask, then an LM head tied to the token embeddings),
wrapped as a Hugging Face model so it trains, saves, loads and generates through the same stages
as GPT-2. Like `torch_transformer`, the wrapper is thin: everything inside `forward` is torch.nn.
It keeps no key/value cache: generation re-reads the whole prefix each step (fine for short texts).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin
from transformers.modeling_outputs import CausalLMOutput

from transferlab.models.torch_transformer import TorchPreTrainedModel, TorchTransformerConfig, layer_stack


class TorchDecoderConfig(TorchTransformerConfig):
    model_type = "torch_decoder"

    def __init__(
        self,
        vocab_size=8000,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=None,
        **kwargs,
    ):
        kwargs.setdefault("use_cache", False)
        super().__init__(
            vocab_size=vocab_size,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=tie_word_embeddings,
            pad_token_id=pad_token_id,
            **kwargs,
        )


class TorchDecoderModel(TorchPreTrainedModel):
    """Token ids -> contextual vectors where position t sees only positions <= t."""

    config_class = TorchDecoderConfig

    def __init__(self, config: TorchDecoderConfig):
        super().__init__(config)
        self.tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = layer_stack(config)
        self.final_norm = nn.LayerNorm(config.d_model)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.dropout(self.tokens(input_ids) + self.positions(positions))
        causal = nn.Transformer.generate_square_subsequent_mask(
            length, device=input_ids.device, dtype=hidden.dtype
        )
        padding = None
        if attention_mask is not None and not bool(attention_mask.all()):
            padding = (attention_mask == 0).to(hidden.dtype) * torch.finfo(hidden.dtype).min
        hidden = self.layers(hidden, mask=causal, src_key_padding_mask=padding, is_causal=True)
        return self.final_norm(hidden)


class TorchDecoderForCausalLM(TorchPreTrainedModel, GenerationMixin):
    config_class = TorchDecoderConfig
    base_model_prefix = "decoder"  # the attribute holding TorchDecoderModel
    _tied_weights_keys = {"lm_head.weight": "decoder.tokens.weight"}

    def __init__(self, config: TorchDecoderConfig):
        super().__init__(config)
        self.decoder = TorchDecoderModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        logits = self.lm_head(self.decoder(input_ids, attention_mask))
        loss = None
        if labels is not None:  # predict token t+1 from positions <= t
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def register() -> None:
    """Teach the Auto* classes this architecture, so from_pretrained finds it by model_type."""
    AutoConfig.register("torch_decoder", TorchDecoderConfig, exist_ok=True)
    AutoModelForCausalLM.register(TorchDecoderConfig, TorchDecoderForCausalLM, exist_ok=True)
