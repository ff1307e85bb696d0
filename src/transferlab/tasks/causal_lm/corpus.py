"""The language-model corpus: the prepared splits' texts (labels ignored, except to pick a domain),
tokenized, joined with an end-of-text token and packed into fixed-length blocks."""

from __future__ import annotations

import logging

from transferlab.data import prepared
from transferlab.errors import UserError

log = logging.getLogger(__name__)


def texts(split: str, domain: str | None = None) -> list[str]:
    """The texts of one prepared split; with a domain, only those whose label is that domain."""
    frame = prepared.read_split(split)
    if domain is not None:
        labels = prepared.read_labels()
        if domain not in labels:
            raise UserError(
                f"lm.domain={domain!r} is not a label of the prepared data; labels: "
                f"{', '.join(labels)} (or lm.domain=null for all texts)"
            )
        frame = frame[frame["label"] == labels.index(domain)]
    if frame.empty:
        raise UserError(f"the {split} split has no texts{f' for lm.domain={domain!r}' if domain else ''}")
    return frame["text"].tolist()


def pack(texts: list[str], tok, block_size: int, *, limit: int | None = None, seed: int = 0):
    """A LongTensor [blocks, block_size]: the texts' tokens, each text followed by the end-of-text
    token, cut into consecutive blocks (the tail shorter than a block is dropped). With `limit`, a
    seeded sample of that many blocks, kept in corpus order."""
    import torch

    eos = tok.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no end-of-text token: a causal LM needs one")
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    count = len(stream) // block_size
    if count == 0:
        raise UserError(
            f"{len(stream)} tokens of text do not fill one block of model.max_length="
            f"{block_size}: use more text or shorter blocks"
        )
    blocks = torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)
    if limit is not None and count > limit:
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit]
        blocks = blocks[chosen.sort().values]
    return blocks


def dataset(blocks):
    """A datasets.Dataset of blocks whose labels are the inputs (the model shifts them by one)."""
    from datasets import Dataset

    rows = blocks.tolist()
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def split_blocks(split: str, tok, cfg, *, domain: str | None = None, limit: int | None = None):
    """Packed blocks of one split, logged with their size."""
    blocks = pack(texts(split, domain), tok, cfg.model.max_length, limit=limit, seed=cfg.seed)
    log.info(
        "%s%s: %d blocks of %d tokens",
        split,
        f" ({domain})" if domain else "",
        len(blocks),
        cfg.model.max_length,
    )
    return blocks
