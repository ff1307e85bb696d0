"""Config group `model`: the tokenizer and the Transformer, from pretrained weights or a config."""

from __future__ import annotations

import logging

from transferlab.errors import UserError
from transferlab.packages import resolve

log = logging.getLogger(__name__)


def _load(loader, name_or_path: str, what: str, **kwargs):
    path = resolve(name_or_path)
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"model.name_or_path={name_or_path!r}: cannot load the {what} ({first}). Use a local "
            "checkpoint folder, a package: path, or a hub id (hubs need network)"
        ) from None


def tokenizer(cfg_model):
    """The tokenizer of model.name_or_path (scratch models reuse it: same vocabulary)."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, cfg_model.name_or_path, "tokenizer")


def scratch_config(cfg_model, tok):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tok),
        hidden_size=cfg_model.hidden_size,
        num_hidden_layers=cfg_model.num_layers,
        num_attention_heads=cfg_model.num_heads,
        intermediate_size=cfg_model.intermediate_size,
        hidden_dropout_prob=cfg_model.dropout,
        attention_probs_dropout_prob=cfg_model.dropout,
        max_position_embeddings=max(512, cfg_model.max_length),
        pad_token_id=tok.pad_token_id,
    )


def encoder(cfg_model, tok, *, masked_lm: bool):
    """The starting Transformer: with a masked-LM head (for training) or bare (to pass through)."""
    from transformers import AutoModel, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if masked_lm else AutoModel
    if cfg_model.init == "scratch":
        log.info("building a randomly initialised BERT from config (init=scratch)")
        return auto.from_config(scratch_config(cfg_model, tok))
    model = _load(auto, cfg_model.name_or_path, "model")
    if masked_lm and "MaskedLM" not in "".join(model.config.architectures or []):
        log.warning("%s ships no masked-LM head weights: training starts with a fresh head",
                    cfg_model.name_or_path)
    return model
