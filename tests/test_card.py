"""The Hugging Face model card (transferlab.tracking.card) from composed configs, without training: front
matter, base model, sections, and the registry description's test results. The cards the tiny
pipelines write are checked in test_pipeline.py and test_causal_lm.py."""

from __future__ import annotations

import pandas as pd
import yaml

from conftest import make_config
from transferlab.tasks.causal_lm.card import language_model_card
from transferlab.tasks.classification.card import classifier_card
from transferlab.tracking.card import DESCRIPTION_LIMIT, with_test_results

LABELS = ["business", "sports"]
FRAMES = {"train": pd.DataFrame({"label": [0, 0, 0, 1, 1]}), "validation": pd.DataFrame({"label": [0, 1]})}
METRICS = {
    "epochs_run": 2.0,
    "best_epoch": 1.0,
    "best_validation_loss": 0.31,
    "best_validation_accuracy": 0.875,
    "parameters": 22_000_000,
    "parameters_trainable_at_start": 21_000,
}


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    meta, _, body = card.removeprefix("---\n").partition("\n---\n")
    return yaml.safe_load(meta), body


def test_a_classifier_from_a_checkpoint_names_its_base_model():
    meta, body = split(
        classifier_card(make_config(), LABELS, FRAMES, METRICS, "BertForSequenceClassification", "bf16")
    )
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # the package's Hub original
    assert meta["base_model_relation"] == "finetune" and meta["library_name"] == "transformers"
    assert meta["language"] == "en" and meta["metrics"] == ["accuracy", "loss"]
    assert meta["model-index"][0]["results"][0]["metrics"][0] == {
        "type": "accuracy",
        "value": 0.875,
        "name": "validation accuracy (best epoch)",
    }
    assert "| 0 | business | 3 | 1 |" in body and "| 1 | sports | 2 | 1 |" in body
    assert "| precision | bf16 (requested: auto) |" in body and "| head learning rate | 0.001 |" in body
    assert "| parameters (trainable at start) | 22,000,000 (21,000) |" in body
    assert "British news of 2004-2005" in body


def test_a_scratch_classifier_on_a_file_has_no_base_model():
    cfg = make_config("model=scratch", "data=files", "data.path=/data/reviews.csv", "train.steps=100")
    meta, body = split(classifier_card(cfg, LABELS, FRAMES, METRICS, "BertForSequenceClassification", None))
    assert "base_model" not in meta and "language" not in meta and meta["datasets"] == ["reviews.csv"]
    assert "random weights (bert" in body and "100 steps of masked-language-model training" in body
    assert "the file `reviews.csv`" in body and "| precision |" not in body
    assert classifier_card(cfg, LABELS, FRAMES, METRICS, "X", None) == classifier_card(
        cfg, LABELS, FRAMES, METRICS, "X", None
    ), "a rerun must write the same bytes"


def test_a_language_model_card_reports_perplexity():
    metrics = {
        "train_blocks": 128,
        "validation_blocks": 32,
        "epochs_run": 2.0,
        "best_epoch": 2.0,
        "validation_perplexity_before": 40.1,
        "validation_perplexity_after": 21.5,
        "parameters": 134_515_008,
    }
    meta, body = split(language_model_card(make_config("task=causal_lm"), metrics, "LlamaForCausalLM"))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 21.5
    assert "| perplexity before fine-tuning | 40.1 |" in body and "on tech text" in body
    assert "dequantized" in body and "## Limitations" in body


def test_the_registry_description_is_the_card_then_the_test_results():
    card = classifier_card(make_config(), LABELS, FRAMES, METRICS, "BertForSequenceClassification", "fp32")
    described = with_test_results(card, [("accuracy", 0.9748)])
    assert described.startswith(card) and described.endswith("| accuracy | 0.9748 |\n")
    long = with_test_results("x" * 10_000, [("accuracy", 0.5)])  # cut to MLflow's limit, results kept
    assert len(long) <= DESCRIPTION_LIMIT and long.endswith("| accuracy | 0.5 |\n") and "cut to fit" in long
    assert with_test_results("", [("accuracy", 0.5)]).startswith("## Test results")
