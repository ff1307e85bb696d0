"""An encoder assembled from plain `torch.nn` parts (Embedding + TransformerEncoder), wrapped as a
Hugging Face model so it trains, saves, loads and evaluates through the same stages as BERT.

The wrapper is thin on purpose: `PreTrainedModel` brings save/load (safetensors) and Trainer
support; everything inside `forward` is torch.nn.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput


class TorchTransformerConfig(PretrainedConfig):
    """Sizes of a torch.nn Transformer stack (this encoder, and torch_decoder's decoder)."""

    model_type = "torch_transformer"

    def __init__(
        self,
        vocab_size=30522,
        d_model=128,
        nhead=4,
        num_layers=2,
        dim_feedforward=512,
        dropout=0.1,
        max_position_embeddings=512,
        pad_token_id=0,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.nhead = nhead
        self.num_layers = num_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.max_position_embeddings = max_position_embeddings
        # Names that generic code (Trainer, generate, techniques.split) looks for.
        self.hidden_size = d_model
        self.num_hidden_layers = num_layers
        self.num_attention_heads = nhead

    @classmethod
    def sized_by(cls, cfg_model, **settings):
        """This config with the sizes of the `model` config group (hidden_size, num_heads, ...)."""
        return cls(
            d_model=cfg_model.hidden_size,
            nhead=cfg_model.num_heads,
            num_layers=cfg_model.num_layers,
            dim_feedforward=cfg_model.intermediate_size,
            dropout=cfg_model.dropout,
            **settings,
        )


def init_weights(module) -> None:
    """BERT's initialisation, for the torch.nn stacks: N(0, 0.02) weights, zero biases and padding
    row, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def layer_stack(config: TorchTransformerConfig) -> nn.TransformerEncoder:
    """config.num_layers pre-norm nn.TransformerEncoderLayer blocks (a decoder runs them with a
    causal mask)."""
    layer = nn.TransformerEncoderLayer(
        config.d_model,
        config.nhead,
        config.dim_feedforward,
        config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)


class Embeddings(nn.Module):
    def __init__(self, config: TorchTransformerConfig):
        super().__init__()
        self.tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.norm(self.tokens(input_ids) + self.positions(positions)))


class TorchPreTrainedModel(PreTrainedModel):
    """Hugging Face save/load and Trainer support for the torch.nn stacks, with init_weights."""

    # Where transformers' get/set_input_embeddings find the token nn.Embedding: `self.tokens`
    # (the decoder) or `self.embeddings.tokens` (the encoder).
    _input_embed_layer = "tokens"

    def _init_weights(self, module):
        init_weights(module)


class TorchTransformerPreTrainedModel(TorchPreTrainedModel):
    config_class = TorchTransformerConfig
    base_model_prefix = "encoder_model"


class TorchTransformerModel(TorchTransformerPreTrainedModel):
    """Token ids -> contextual vectors: nn.Embedding + nn.TransformerEncoder (pre-norm)."""

    def __init__(self, config: TorchTransformerConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = layer_stack(config)
        self.final_norm = nn.LayerNorm(config.d_model)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        padding = None if attention_mask is None else attention_mask == 0
        hidden = self.encoder(self.embeddings(input_ids), src_key_padding_mask=padding)
        return BaseModelOutput(last_hidden_state=self.final_norm(hidden))


class TorchTransformerForMaskedLM(TorchTransformerPreTrainedModel):
    def __init__(self, config: TorchTransformerConfig):
        super().__init__(config)
        self.encoder_model = TorchTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        hidden = self.encoder_model(input_ids, attention_mask).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100
            )
        return MaskedLMOutput(loss=loss, logits=logits)


class TorchTransformerForSequenceClassification(TorchTransformerPreTrainedModel):
    """Mean of the non-padding token vectors -> dropout -> linear classifier."""

    def __init__(self, config: TorchTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder_model = TorchTransformerModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        hidden = self.encoder_model(input_ids, attention_mask).last_hidden_state
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Teach the Auto* classes this architecture, so from_pretrained finds it by model_type."""
    AutoConfig.register("torch_transformer", TorchTransformerConfig, exist_ok=True)
    AutoModel.register(TorchTransformerConfig, TorchTransformerModel, exist_ok=True)
    AutoModelForMaskedLM.register(TorchTransformerConfig, TorchTransformerForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        TorchTransformerConfig, TorchTransformerForSequenceClassification, exist_ok=True
    )
