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
        raise cannot_load(name_or_path, what, err, "a local checkpoint folder") from None


def cannot_load(name_or_path: str, what: str, err: Exception, kinds: str) -> UserError:
    """One message for a checkpoint that from_pretrained refused; `kinds` lists what would work."""
    if "custom code" in str(err):  # transformers refuses code shipped with it (trust_remote_code)
        return UserError(
            f"model.name_or_path={name_or_path!r} ships its own Python code (auto_map in config.json), "
            "which runs only with model.trust_remote_code=true: set it if you trust its author"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(
        f"model.name_or_path={name_or_path!r}: cannot load the {what} ({first}). Use {kinds}, "
        "a package: path, or a hub id (hubs need network)"
    )


# Each architecture names its dropouts differently; the torch.nn models have one `dropout` for all.
DROPOUT_KEYS = {
    "attention": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "hidden": ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop", "embd_pdrop"),
}


def dropout_overrides(folder, attention: float | None = None, hidden: float | None = None) -> dict:
    """from_pretrained keywords that set the checkpoint's attention-probability and hidden-state
    dropouts (None: keep it). An architecture without a separate one of them is left as it is."""
    import json
    from pathlib import Path

    config = json.loads((Path(folder) / "config.json").read_text())
    overrides = {}
    for kind, probability in (("attention", attention), ("hidden", hidden)):
        if probability is None:
            continue
        keys = [key for key in DROPOUT_KEYS[kind] if key in config]
        if not keys:
            log.info(
                "%s has no separate %s dropout: finetune.%s_dropout does not apply",
                config.get("model_type", folder),
                kind,
                kind,
            )
        overrides |= dict.fromkeys(keys, probability)
    return overrides


# How this machine reached a tokenizer's files, not what the tokenizer is: transformers saves these
# loading options into tokenizer_config.json, which would make a model folder's DVC hash depend on
# HF_HUB_OFFLINE (every Make target sets it, a plain `dvc repro` does not).
LOADING_OPTIONS = ("local_files_only", "cache_dir", "force_download", "token")


def save_tokenizer(tok, folder) -> None:
    """`tok.save_pretrained(folder)` without the loading options of this machine."""
    for option in LOADING_OPTIONS:
        tok.init_kwargs.pop(option, None)
    tok.save_pretrained(folder)


def tokenizer(cfg_model, texts=None):
    """The tokenizer of model.name_or_path, or for `model.tokenizer: train` a WordPiece vocabulary
    learnt from `texts` (the training split), so a scratch model needs no pretrained files."""
    from transformers import AutoTokenizer

    if cfg_model.init == "scratch" and cfg_model.tokenizer == "train":
        return train_wordpiece(texts, cfg_model.vocab_size)
    return _load(
        AutoTokenizer, cfg_model.name_or_path, "tokenizer", trust_remote_code=cfg_model.trust_remote_code
    )


def train_wordpiece(texts, vocab_size: int):
    """A lower-casing BERT-style WordPiece tokenizer trained with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    log.info("trained a WordPiece tokenizer: %d tokens", tok.get_vocab_size())
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def register_architectures() -> None:
    """Make the torch.nn encoder loadable by the Auto* classes (every stage calls this first)."""
    from transferlab.models.torch_transformer import register

    register()


def scratch_config(cfg_model, tok):
    m = cfg_model
    shared = {
        "vocab_size": len(tok),
        "max_position_embeddings": max(512, m.max_length),
        "pad_token_id": tok.pad_token_id,
    }
    if m.arch == "torch_transformer":
        from transferlab.models.torch_transformer import TorchTransformerConfig

        return TorchTransformerConfig.sized_by(m, **shared)
    from transformers import BertConfig

    return BertConfig(
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        intermediate_size=m.intermediate_size,
        hidden_dropout_prob=m.dropout,
        attention_probs_dropout_prob=m.dropout,
        **shared,
    )


def encoder(cfg_model, tok, *, masked_lm: bool):
    """The starting Transformer: with a masked-LM head (for training) or bare (to pass through)."""
    from transformers import AutoModel, AutoModelForMaskedLM

    register_architectures()
    auto = AutoModelForMaskedLM if masked_lm else AutoModel
    if cfg_model.init == "scratch":
        log.info("building a randomly initialised %s from config (init=scratch)", cfg_model.arch)
        return auto.from_config(scratch_config(cfg_model, tok))
    model = _load(auto, cfg_model.name_or_path, "model", trust_remote_code=cfg_model.trust_remote_code)
    if masked_lm and "MaskedLM" not in "".join(model.config.architectures or []):
        log.warning(
            "%s ships no masked-LM head weights: training starts with a fresh head", cfg_model.name_or_path
        )
    return model
