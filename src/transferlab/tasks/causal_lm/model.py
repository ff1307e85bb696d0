"""Decoders for task=causal_lm: a tokenizer (pretrained, or byte-level BPE learnt on the train
split) and a causal LM from a config (scratch) or from pretrained weights, GGUF files included."""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.errors import UserError
from transferlab.packages import resolve

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"


def _gguf(path: str) -> tuple[str, dict]:
    """from_pretrained arguments: a .gguf file is loaded from its folder with gguf_file=."""
    if path.endswith(".gguf"):
        if not Path(path).is_file():
            raise UserError(f"GGUF file {path} not found")
        return str(Path(path).parent), {"gguf_file": Path(path).name}
    return path, {}


def _load(loader, name_or_path: str, what: str, *, trust_remote_code: bool = False):
    path, extra = _gguf(resolve(name_or_path))
    try:
        return loader.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError, ImportError) as err:
        from transferlab.models.build import cannot_load

        raise cannot_load(name_or_path, what, err, "a local checkpoint folder, a .gguf file") from None


def tokenizer(cfg_model, texts=None):
    """name_or_path's tokenizer, or for a scratch model with `tokenizer: train` a byte-level BPE
    learnt from `texts`. Either way it has an end-of-text token, also used for padding."""
    from transformers import AutoTokenizer

    if cfg_model.init == "scratch" and cfg_model.tokenizer == "train":
        tok = train_bpe(texts, cfg_model.vocab_size)
    else:
        tok = _load(
            AutoTokenizer, cfg_model.name_or_path, "tokenizer", trust_remote_code=cfg_model.trust_remote_code
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def train_bpe(texts, vocab_size: int):
    """A GPT-2 style byte-level BPE (no unknown tokens) trained with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    log.info("trained a byte-level BPE tokenizer: %d tokens", tok.get_vocab_size())
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def register_architectures() -> None:
    """Make the torch.nn decoder loadable by the Auto* classes."""
    from transferlab.models.torch_decoder import register

    register()


def scratch_config(cfg_model, tok):
    """A decoder config sized by the model group; positions cover a block plus generated tokens."""
    common = {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id or tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    positions = max(1024, 2 * cfg_model.max_length)
    if cfg_model.arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_embd=cfg_model.hidden_size,
            n_layer=cfg_model.num_layers,
            n_head=cfg_model.num_heads,
            n_inner=cfg_model.intermediate_size,
            n_positions=positions,
            resid_pdrop=cfg_model.dropout,
            embd_pdrop=cfg_model.dropout,
            attn_pdrop=cfg_model.dropout,
            **common,
        )
    if cfg_model.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=cfg_model.hidden_size,
            num_hidden_layers=cfg_model.num_layers,
            num_attention_heads=cfg_model.num_heads,
            intermediate_size=cfg_model.intermediate_size,
            max_position_embeddings=positions,
            attention_dropout=cfg_model.dropout,
            tie_word_embeddings=True,
            **common,
        )
    from transferlab.models.torch_decoder import TorchDecoderConfig

    return TorchDecoderConfig.sized_by(cfg_model, max_position_embeddings=positions, **common)


def decoder(cfg_model, tok):
    """The starting causal LM: random weights from a config (scratch) or pretrained weights."""
    from transformers import AutoModelForCausalLM

    register_architectures()
    if cfg_model.init == "scratch":
        log.info("building a randomly initialised %s decoder from config (init=scratch)", cfg_model.arch)
        return AutoModelForCausalLM.from_config(scratch_config(cfg_model, tok))
    path = resolve(cfg_model.name_or_path)
    if path.endswith(".gguf"):
        return from_gguf(cfg_model.name_or_path)
    return _load(
        AutoModelForCausalLM, cfg_model.name_or_path, "model", trust_remote_code=cfg_model.trust_remote_code
    )


def from_gguf(name_or_path: str):
    """A regular (fp32, savable) causal LM from a GGUF file. transformers dequantises GGUF tensors
    on load but refuses to save such a model, so the weights move into a model built from the same
    config without the quantization settings."""
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = _load(AutoModelForCausalLM, name_or_path, "model")
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **settings)
    net = AutoModelForCausalLM.from_config(config)
    missing, unexpected = net.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(
            f"{name_or_path}: GGUF weights do not fit the {model_type} config "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})"
        )
    net.tie_weights()
    log.info(
        "converted GGUF %s: %s, %d parameters",
        Path(resolve(name_or_path)).name,
        model_type,
        net.num_parameters(),
    )
    return net
