"""model.truncation=windows with the real MiniLM tokenizer and a tiny BERT: overlapping windows that
cover a long text, one training row per window with its text's label, one pooled prediction per
text (evaluate and serving), and the config checks. (head_tail: tests/test_models.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_config
from transferlab.config.schema import MINILM
from transferlab.data import prepared
from transferlab.data.truncation import WINDOW_OF, encode
from transferlab.errors import UserError
from transferlab.packages import resolve
from transferlab.tasks.classification import serving

MAX_LENGTH, STRIDE = 32, 8


def long_text(words: int, start: int = 0) -> str:
    topics = ("markets", "football", "election", "film", "software")
    return " ".join(f"{topics[i % len(topics)]} {i}" for i in range(start, start + words))


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(MINILM))


@pytest.fixture(scope="module")
def net(tok):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_LENGTH,
        num_labels=3,
        id2label={0: "business", 1: "sport", 2: "tech"},
        # large random weights: windows get logits of a few units that differ, so
        # how they are pooled shows in the result (0.02 gives ~0 for every window)
        initializer_range=0.5,
    )
    return BertForSequenceClassification(config).eval()


TEXTS = [long_text(60), "A short text.", long_text(90, start=500)]


def test_windows_overlap_by_the_stride_and_cover_every_token(tok):
    windows = encode(tok, TEXTS, MAX_LENGTH, "windows", stride=STRIDE, max_windows=100)
    owner = windows[WINDOW_OF]
    assert owner == sorted(owner) and set(owner) == {0, 1, 2}
    assert owner.count(1) == 1 and owner.count(0) > 2 and owner.count(2) > owner.count(0)
    assert all(len(ids) <= MAX_LENGTH for ids in windows["input_ids"])
    assert windows["input_ids"][owner.index(1)] == tok(TEXTS[1])["input_ids"], "a short text is one window"
    for text_id, text in enumerate(TEXTS):
        rows = [windows["input_ids"][row] for row, owned in enumerate(owner) if owned == text_id]
        assert all(ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id for ids in rows)
        stitched = rows[0][1:-1] + [t for ids in rows[1:] for t in ids[1 + STRIDE : -1]]
        assert stitched == tok(text)["input_ids"][1:-1], "every token, once the overlaps are dropped"
        for before, after in zip(rows, rows[1:], strict=False):
            assert before[-1 - STRIDE : -1] == after[1 : 1 + STRIDE], "neighbours share STRIDE tokens"
    capped = encode(tok, TEXTS, MAX_LENGTH, "windows", stride=STRIDE, max_windows=2)
    assert capped[WINDOW_OF] == [0, 0, 1, 2, 2], "at most max_windows per text, its first ones"
    assert capped["input_ids"][:2] == windows["input_ids"][:2]
    batch = encode(tok, TEXTS, MAX_LENGTH, "windows", stride=STRIDE, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (len(owner), MAX_LENGTH) and batch[WINDOW_OF].tolist() == owner


def test_tokenized_windows_repeat_the_label_of_their_text(tok):
    frame = pd.DataFrame({"text": TEXTS, "label": [2, 0, 1]})
    windows = prepared.tokenized(frame, tok, MAX_LENGTH, truncation="windows", stride=STRIDE, max_windows=8)
    counts = [len(encode(tok, [text], MAX_LENGTH, "windows", stride=STRIDE)["input_ids"]) for text in TEXTS]
    assert 1 < counts[0] <= 8 and counts[1] == 1 and counts[2] > 8
    assert list(windows["labels"]) == [2] * counts[0] + [0] + [1] * 8, "the cap (8) applies too"
    assert sorted(windows.column_names) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert all(len(ids) <= MAX_LENGTH for ids in windows["input_ids"])
    head = prepared.tokenized(frame, tok, MAX_LENGTH)
    assert list(head["labels"]) == [2, 0, 1] and len(head) == len(frame)


def expected_probabilities(net, tok, text: str, cap: int):
    """Softmax of the mean of the first `cap` windows' logits and the mean of their softmaxes, each
    window run on its own (no padding, no batching), with the tokenizer's windows taken directly."""
    import torch

    windows = tok(
        [text], truncation=True, max_length=MAX_LENGTH, stride=STRIDE, return_overflowing_tokens=True
    )
    windows.pop(WINDOW_OF)
    with torch.inference_mode():
        logits = torch.cat(
            [
                net(**{key: torch.tensor([rows[i]]) for key, rows in windows.items()}).logits
                for i in range(min(cap, len(windows["input_ids"])))
            ]
        )
    return logits.mean(0).softmax(-1).numpy(), logits.softmax(-1).mean(0).numpy(), len(windows["input_ids"])


def test_predict_gives_one_row_per_text_the_softmax_of_its_windows_mean_logits(net, tok):
    got = serving.class_probabilities(
        net,
        tok,
        TEXTS,
        MAX_LENGTH,
        batch_size=2,
        device="cpu",
        truncation="windows",
        stride=STRIDE,
        max_windows=8,
    )
    assert got.shape == (len(TEXTS), 3)
    for row, text in zip(got, TEXTS, strict=True):
        pooled, mean_of_softmax, windows = expected_probabilities(net, tok, text, cap=8)
        np.testing.assert_allclose(row, pooled, atol=1e-5)
        if windows > 1:  # the test tells logit pooling from probability pooling
            assert np.abs(pooled - mean_of_softmax).max() > 1e-3
        if windows > 8:  # and a capped text from an uncapped one
            assert np.abs(pooled - expected_probabilities(net, tok, text, cap=windows)[0]).max() > 1e-3


def test_serving_pools_the_windows_as_evaluate_does(net, tok, tmp_path):
    from types import SimpleNamespace

    from transferlab.tasks.classification.serving import TextClassifier

    net.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    served = TextClassifier()
    served.load_context(
        SimpleNamespace(
            artifacts={"model": str(tmp_path)},
            model_config={
                "max_length": MAX_LENGTH,
                "truncation": "windows",
                "window_stride": STRIDE,
                "max_windows": 8,
            },
        )
    )
    answer = served.predict(None, TEXTS)
    probabilities = serving.class_probabilities(net, tok, TEXTS, MAX_LENGTH, 2, "cpu", "windows", STRIDE, 8)
    assert answer["label"].tolist() == [net.config.id2label[int(i)] for i in probabilities.argmax(-1)]
    np.testing.assert_allclose(answer["score"], probabilities.max(-1), atol=1e-5)


def test_the_window_settings_are_checked_and_named_in_the_card():
    from transferlab.tasks.classification.card import truncation_line

    cfg = make_config("model.truncation=windows")
    assert "windows of 128 tokens that share 32 tokens, at most 8 per text" in truncation_line(cfg.model)
    with pytest.raises(UserError) as caught:
        make_config("model.truncation=windows", "model.window_stride=128")
    assert str(caught.value) == (
        "invalid config: model.window_stride=128 must be >= 0 and < "
        "model.max_length / 2 = 64: neighbouring windows share fewer than half "
        "their tokens"
    )
    with pytest.raises(UserError, match="model.max_windows=0 must be > 0"):
        make_config("model.truncation=windows", "model.max_windows=0")
