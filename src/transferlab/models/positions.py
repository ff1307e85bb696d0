"""How many tokens a checkpoint reads, from its config.json: the compose-time check of the configured
model (config/checks.py) and the finetune stage's check of models/pretrained share it."""

from __future__ import annotations

from transferlab.errors import UserError

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Position ids of these start after the padding index: 514 positions read 512 tokens.
PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text")


def checkpoint_positions(name_or_path: str) -> tuple[int, str] | None:
    """The most tokens a pretrained checkpoint reads and the config.json entry saying so, read from
    a local folder, a package: path or a hub id already in the Hugging Face cache; else None (a GGUF
    file, a hub id not downloaded yet, relative positions only): the training stages find out."""
    import json
    from pathlib import Path

    from transferlab.packages import PREFIX, resolve

    try:
        if name_or_path.startswith(PREFIX):
            folder = Path(resolve(name_or_path))
        elif Path(name_or_path).expanduser().is_dir():
            folder = Path(name_or_path).expanduser()
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "config.json")
            folder = Path(cached).parent if isinstance(cached, str) else Path(name_or_path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except Exception:  # not there, not a folder, not a hub id, not JSON: nothing to check against
        return None
    if not isinstance(config, dict) or config.get("position_biased_input") is False:
        return None  # DeBERTa-v2 and the like: relative positions only, no fixed limit
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int):
            if config.get("model_type") in PADDED_POSITIONS:
                offset = int(config.get("pad_token_id", 1)) + 1
                return config[key] - offset, f"{key}: {config[key]}, of which {offset} before the first token"
            return config[key], f"{key}: {config[key]}"
    return None


def check_positions(folder, max_length: int) -> None:
    """Refuse a model.max_length beyond the positions of a trained checkpoint (models/pretrained),
    before loading it. Compose time reads only the configured model; a scratch model's positions
    were sized by its train run, which a stage run by hand after a max_length change does not redo."""
    found = checkpoint_positions(str(folder))
    if found and max_length > found[0]:
        raise UserError(
            f"model.max_length={max_length} is more than {folder} reads ({found[1]} in its config.json): "
            f"use model.max_length <= {found[0]}, or rerun the train stage with this max_length"
        )
