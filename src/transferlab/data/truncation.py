"""Texts longer than `model.max_length` tokens, cut the way `model.truncation` says: `head` keeps
the first tokens (what a tokenizer does with truncation=True); `head_tail` keeps the first quarter
and the last three quarters of the budget, the split Sun et al. (2019, "How to Fine-Tune BERT for
Text Classification") found best for long news articles: the opening says what the text is about,
the end how it concludes. Same number of tokens, so the same compute, as `head`.
`windows` reads the whole text (up to `model.max_windows` windows) in overlapping windows of
`max_length` tokens, the usual way to put long documents through a fixed-length encoder (the
Hugging Face question-answering examples do it with `stride` + `return_overflowing_tokens`):
fine-tuning trains on every window with its text's label; prediction averages each text's windows'
logits (`pool`). Compute grows with the number of windows."""

from __future__ import annotations

from transferlab.errors import UserError

HEAD_SHARE = 0.25  # head_tail: the share of the budget taken from the start
WINDOW_OF = "overflow_to_sample_mapping"  # windows: the tokenizer's key for each row's text index


def window_stride(max_length: int, stride: int | None) -> int:
    """`model.window_stride` as a number: null shares a quarter of the window."""
    return max_length // 4 if stride is None else int(stride)


def encode(
    tok,
    texts: list[str],
    max_length: int,
    truncation: str = "head",
    *,
    stride: int | None = None,
    max_windows: int | None = None,
    **padding,
) -> dict:
    """Token ids (+ attention mask, token types) of `texts`, at most `max_length` each, special
    tokens included; `padding` (padding=True, return_tensors="pt") pads the batch as `tok` would.
    windows: one row per window, and WINDOW_OF says which text each row belongs to (rows of a text
    are consecutive, texts in order); `stride` tokens are shared by neighbouring windows, and a
    text gives at most `max_windows` (its first ones; None: all)."""
    if str(truncation) == "head":
        return tok(texts, truncation=True, max_length=max_length, **padding)
    if str(truncation) == "windows":
        return _windows(tok, texts, max_length, window_stride(max_length, stride), max_windows, padding)
    whole = tok(texts, return_special_tokens_mask=True, verbose=False)
    special = whole.pop("special_tokens_mask")  # [CLS] ... [SEP] stay where the tokenizer put them
    cut = {key: [] for key in whole}
    for i, mask in enumerate(special):
        keep = range(len(mask))
        if len(mask) > max_length:
            content = [j for j, is_special in enumerate(mask) if not is_special]
            budget = max_length - (len(mask) - len(content))
            head = int(budget * HEAD_SHARE)
            kept = set(content[:head] + content[len(content) - (budget - head) :])
            keep = [j for j, is_special in enumerate(mask) if is_special or j in kept]
        for key in whole:
            cut[key].append([whole[key][i][j] for j in keep])
    return tok.pad(cut, **padding) if padding else cut


def _windows(tok, texts, max_length: int, stride: int, max_windows: int | None, padding: dict):
    if not tok.is_fast:  # only the Rust tokenizers map overflowing windows back to their texts
        raise UserError(
            f"model.truncation=windows needs a fast tokenizer; {type(tok).__name__} is "
            "not one: use model.truncation=head or head_tail"
        )
    rows = tok(texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
    owner = rows.pop(WINDOW_OF)
    keep, seen = [], {}
    for row, text in enumerate(owner):
        seen[text] = seen.get(text, 0) + 1
        if max_windows is None or seen[text] <= max_windows:
            keep.append(row)
    cut = {key: [rows[key][row] for row in keep] for key in rows}
    cut[WINDOW_OF] = [owner[row] for row in keep]
    return tok.pad(cut, **padding) if padding else cut


def pool(logits, owner, texts: int):
    """One row of logits per text from one per window: the mean over each text's windows (`owner`:
    encode's WINDOW_OF as a tensor; None: the rows are texts already). Logits rather than
    probabilities: the softmax of their mean is the normalised geometric mean of the windows'
    probabilities, so a window that rules a label out counts."""
    if owner is None:
        return logits
    sums = logits.new_zeros(texts, logits.shape[-1]).index_add_(0, owner, logits)
    return sums / owner.bincount(minlength=texts).unsqueeze(-1).to(logits.dtype)
