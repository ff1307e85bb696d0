"""Texts longer than `model.max_length` tokens, cut the way `model.truncation` says: `head` keeps
the first tokens (what a tokenizer does with truncation=True); `head_tail` keeps the first quarter
and the last three quarters of the budget, the split Sun et al. (2019, "How to Fine-Tune BERT for
Text Classification") found best for long news articles: the opening says what the text is about,
the end how it concludes. Same number of tokens, so the same compute, as `head`."""

from __future__ import annotations

HEAD_SHARE = 0.25  # head_tail: the share of the budget taken from the start


def encode(tok, texts: list[str], max_length: int, truncation: str = "head", **padding) -> dict:
    """Token ids (+ attention mask, token types) of `texts`, at most `max_length` each, special
    tokens included; `padding` (padding=True, return_tensors="pt") pads the batch as `tok` would."""
    if str(truncation) == "head":
        return tok(texts, truncation=True, max_length=max_length, **padding)
    whole = tok(texts, return_special_tokens_mask=True, verbose=False)
    special = whole.pop("special_tokens_mask")  # [CLS] ... [SEP] stay where the tokenizer put them
    cut = {key: [] for key in whole}
    for i, mask in enumerate(special):
        keep = range(len(mask))
        if len(mask) > max_length:
            content = [j for j, is_special in enumerate(mask) if not is_special]
            budget = max_length - (len(mask) - len(content))
            head = int(budget * HEAD_SHARE)
            kept = set(content[:head] + content[len(content) - (budget - head):])
            keep = [j for j, is_special in enumerate(mask) if is_special or j in kept]
        for key in whole:
            cut[key].append([whole[key][i][j] for j in keep])
    return tok.pad(cut, **padding) if padding else cut
