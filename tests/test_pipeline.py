"""The whole pipeline through the real DVC CLI in a throwaway git repo, with experiment=tiny:
outputs, dvc.lock, metrics, plots, the MLflow runs, the model card and registry, serving (what a
change reruns: test_reruns.py)."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from conftest import STAGE, sh

STAGES = ["prepare", "train", "finetune", "evaluate"]
pytestmark = pytest.mark.slow


def test_repro_writes_every_output(tiny_repo: Path):
    for out in (
        "data/prepared/train.parquet",
        "data/prepared/validation.parquet",
        "data/prepared/test.parquet",
        "data/prepared/labels.json",
        "models/pretrained/model.safetensors",
        "models/pretrained/tokenizer.json",
        "models/finetuned/model.safetensors",
        "models/finetuned/config.json",
        "models/finetuned/training_log.json",
        "plots/confusion_matrix.png",
        "plots/learning_curve.png",
        "plots/confusion.csv",
        "plots/loss_train.csv",
        "plots/accuracy_validation.csv",
        "plots/learning_rate.csv",
    ):
        assert (tiny_repo / out).is_file(), out
    assert not list(tiny_repo.glob("**/.*.tmp-*")), "a staged temp output was left behind"
    for folder in ("models/pretrained", "models/finetuned"):  # the run had HF_HUB_OFFLINE=1 (tool_env)
        saved = json.loads((tiny_repo / folder / "tokenizer_config.json").read_text())
        assert "local_files_only" not in saved, "a machine's loading option would change the folder's hash"
    finetuned = json.loads((tiny_repo / "models/finetuned/config.json").read_text())
    assert finetuned["num_hidden_layers"] == 2 and finetuned["hidden_size"] == 32
    assert sorted(finetuned["id2label"].values()) == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]


def test_metrics_are_complete(tiny_repo: Path):
    metrics = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert 0.0 <= metrics["baseline_tfidf_logreg"]["accuracy"] <= 1.0
    per_class = json.loads((tiny_repo / "reports/evaluate/per_class.json").read_text())
    assert set(per_class) == {"business", "entertainment", "politics", "sports", "tech"}
    assert sum(c["support"] for c in per_class.values()) == metrics["test_examples"]
    assert "per_class" not in metrics, "the DVC metrics hold the headline scores only"
    # The paired predictions the report tests on: one row per test article, in test-split order.
    import pandas as pd

    with (tiny_repo / "reports/evaluate/predictions.csv").open() as handle:
        paired = [{k: int(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    test = pd.read_parquet(tiny_repo / "data/prepared/test.parquet")
    assert [row["label"] for row in paired] == test["label"].tolist()
    assert len(paired) == metrics["test_examples"]
    for column, accuracy in (
        ("predicted", metrics["accuracy"]),
        ("baseline", metrics["baseline_tfidf_logreg"]["accuracy"]),
    ):
        right = sum(row[column] == row["label"] for row in paired)
        assert round(right / len(paired), 6) == accuracy, column
    data = json.loads((tiny_repo / "metrics/data.json").read_text())
    assert metrics["test_examples"] == data["test"]["examples"]
    train = json.loads((tiny_repo / "metrics/train.json").read_text())
    assert train["steps"] == 4 and train["validation_perplexity"] > 1
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=tiny_repo).stdout)
    assert "metrics/evaluate.json" in json.dumps(shown)


def test_dvc_lock_pins_every_stage_and_nothing_is_stale(tiny_repo: Path):
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    assert lock["stages"]["finetune"]["params"]["params.yaml"]["finetune"]["epochs"] == 1
    assert "data" not in lock["stages"]["finetune"]["params"]["params.yaml"]
    status = sh("dvc", "status", "--json", cwd=tiny_repo).stdout
    assert json.loads(status) == {}


def test_mlflow_has_one_run_per_stage_with_config_and_tags(tiny_repo: Path):
    db = sqlite3.connect(tiny_repo / "mlflow.db")
    runs = dict(db.execute(f"select r.run_uuid, {STAGE} from runs r where r.status = 'FINISHED'").fetchall())
    assert sorted(runs.values()) == sorted(STAGES)
    names = dict(db.execute("select run_uuid, name from runs").fetchall())
    # Each name says what the run is: its stage, then what it ran on (data for prepare, else the model).
    assert {runs[run_id]: name for run_id, name in names.items()} == {
        "prepare": "prepare · bbc_news-max8",
        "train": "train · bert-2x32-scratch-64",
        "finetune": "finetune · bert-2x32-scratch-64",
        "evaluate": "evaluate · bert-2x32-scratch-64",
    }
    commit = sh("git", "rev-parse", "HEAD", cwd=tiny_repo).stdout.strip()
    for run_id, stage in runs.items():
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        params = dict(db.execute("select key, value from params where run_uuid = ?", (run_id,)))
        assert tags["transferlab.stage"] == stage and tags["git.commit"] == commit
        assert tags["task"] == "classification", "runs are not grouped by task"
        assert len(tags["data.digest"]) == 16
        assert params["finetune.backbone_lr"] == "0.0005" and params["model.init"] == "scratch"
        artifact_dir = tiny_repo / "mlruns"
        assert (
            list(artifact_dir.glob(f"*/{run_id}/artifacts/config.yaml"))
            or list(artifact_dir.glob(f"*/*/{run_id}/artifacts/config.yaml"))
            or list(artifact_dir.glob(f"**/{run_id}/**/config.yaml"))
        ), f"{stage}: no config artifact"
    by_stage = {stage: run_id for run_id, stage in runs.items()}

    def tag(run_id: str, key: str):
        row = db.execute("select value from tags where run_uuid = ? and key = ?", (run_id, key)).fetchone()
        return row and row[0]

    # Lineage: each stage names the run that produced what it read.
    assert tag(by_stage["train"], "lineage.prepare_run_id") == by_stage["prepare"]
    assert tag(by_stage["finetune"], "lineage.train_run_id") == by_stage["train"]
    assert tag(by_stage["evaluate"], "lineage.finetune_run_id") == by_stage["finetune"]
    # Data lineage: the splits each stage read, as MLflow dataset inputs with content digests.
    inputs = db.execute(
        "select d.name, d.digest, i.destination_id from inputs i join datasets d "
        "on i.source_id = d.dataset_uuid"
    ).fetchall()
    read = {(name, run) for name, _, run in inputs}
    assert {
        ("train", by_stage["finetune"]),
        ("validation", by_stage["finetune"]),
        ("test", by_stage["evaluate"]),
    } <= read
    assert ("test", by_stage["finetune"]) not in read, "the test split leaked into fine-tuning"
    for artifact in ("classification_report.txt", "misclassified.csv", "predictions.csv", "logs/stage.log"):
        assert list((tiny_repo / "mlruns").glob(f"**/{by_stage['evaluate']}/artifacts/{artifact}")), artifact
    finetune_id = next(r for r, s in runs.items() if s == "finetune")
    steps = db.execute(
        "select count(*) from metrics where run_uuid = ? and key = 'loss'", (finetune_id,)
    ).fetchone()[0]
    assert steps >= 1, "per-step training loss was not logged"
    evaluate_id = next(r for r, s in runs.items() if s == "evaluate")
    accuracy = db.execute(
        "select value from metrics where run_uuid = ? and key = 'test_accuracy'", (evaluate_id,)
    ).fetchone()[0]
    assert accuracy == json.loads((tiny_repo / "metrics/evaluate.json").read_text())["accuracy"]


def front_matter(card: str) -> tuple[dict, str]:
    """A Hugging Face card's YAML metadata and its markdown body."""
    assert card.startswith("---\n"), "a model card opens with YAML front matter"
    meta, _, body = card.removeprefix("---\n").partition("\n---\n")
    return yaml.safe_load(meta), body


def test_the_finetuned_model_has_a_hugging_face_model_card(tiny_repo: Path):
    meta, body = front_matter((tiny_repo / "models/finetuned/README.md").read_text())
    finetune = json.loads((tiny_repo / "metrics/finetune.json").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta, "experiment=tiny starts from random weights: no base model"
    assert "transferlab" in meta["tags"] and meta["datasets"] == ["bbc_news-max8"]
    [result] = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "validation"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        "accuracy": finetune["best_validation_accuracy"],
        "loss": finetune["best_validation_loss"],
    }
    sections = [line for line in body.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Model description",
        "## Training data and labels",
        "## Training config",
        "## Evaluation results",
        "## How to use",
        "## Limitations",
    ]
    data = json.loads((tiny_repo / "metrics/data.json").read_text())
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+) \| (\d+) \|$", body, re.MULTILINE)  # id, label, counts
    assert [label for _, label, _, _ in rows] == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(int(train) for _, _, train, _ in rows) == data["train"]["examples"]
    assert sum(int(validation) for _, _, _, validation in rows) == data["validation"]["examples"]
    assert "| backbone learning rate | 0.0005 |" in body and "| precision | fp32 (requested: fp32) |" in body
    assert str(finetune["best_validation_accuracy"]) in body
    # The card is part of finetune's DVC output: dvc.lock's hash covers it and nothing is stale.
    assert json.loads(sh("dvc", "status", "--json", cwd=tiny_repo).stdout) == {}


def test_the_registered_version_is_described_by_the_card_and_test_results(tiny_repo: Path):
    card = (tiny_repo / "models/finetuned/README.md").read_text()
    evaluate = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    db = sqlite3.connect(tiny_repo / "mlflow.db")
    [(description,)] = db.execute(
        "select description from model_versions where name = 'transferlab-classifier-tiny' and version = 1"
    )
    assert description.startswith(card), "the registered version does not carry the model card"
    test_section = description[len(card) :]
    assert test_section.lstrip().startswith("## Test results")
    assert f"| accuracy | {evaluate['accuracy']} |" in test_section
    assert f"| macro-F1 | {evaluate['macro_f1']} |" in test_section
    # The served model's files carry the card too (the pyfunc model's artifacts are the model folder).
    assert card in [p.read_text() for p in (tiny_repo / "mlruns").rglob("README.md")]


def test_report_tables_the_runs_from_mlflow(tiny_repo: Path, tmp_path: Path):
    out = tmp_path / "reports"
    sh("transferlab", "report", "tiny", "--output", str(out), cwd=tiny_repo)
    table = (out / "comparison.md").read_text()
    accuracy = json.loads((tiny_repo / "metrics/evaluate.json").read_text())["accuracy"]
    row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert f"{accuracy:.4f}" in row and "bert 2x32" in row and "full fine-tune" in row
    assert "| 1 seed (42) |" in row and "±" not in row, "without --seeds: the config's seed, said so"
    assert "TF-IDF + logistic regression" in table
    # the paired test reads the evaluate run's predictions.csv: its discordant counts per seed
    with (tiny_repo / "reports/evaluate/predictions.csv").open() as handle:
        paired = list(csv.DictReader(handle))
    b = sum(r["predicted"] == r["label"] != r["baseline"] for r in paired)
    c = sum(r["baseline"] == r["label"] != r["predicted"] for r in paired)
    assert any(
        line.startswith(f"| tiny | 42 | {accuracy:.4f} |") and f"| {b} | {c} |" in line
        for line in table.splitlines()
    ), table
    assert (out / "comparison.png").stat().st_size > 1000
    missing = sh(
        "transferlab",
        "report",
        "compare_scratch/no_pretraining",
        "--output",
        str(out),
        cwd=tiny_repo,
        check=False,
    )
    assert missing.returncode == 2 and "no finished comparison runs" in missing.stderr


def test_plots_render(tiny_repo: Path, tmp_path: Path):
    sh("dvc", "plots", "show", "-o", str(tmp_path / "plots"), cwd=tiny_repo)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "confusion.csv" in html and "learning_curve" in html
    assert "Validation accuracy per epoch" in html and "Learning-rate schedule" in html
    with (tiny_repo / "plots/accuracy_validation.csv").open() as handle:
        epochs = list(csv.DictReader(handle))
    history = json.loads((tiny_repo / "models/finetuned/training_log.json").read_text())
    assert [float(row["accuracy"]) for row in epochs] == [
        e["eval_accuracy"] for e in history if "eval_accuracy" in e
    ]
    with (tiny_repo / "plots/learning_rate.csv").open() as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    assert rates == [e["learning_rate"] for e in history if "learning_rate" in e]
    assert len(rates) >= 2 and len(set(rates)) > 1, rates  # a schedule, not one constant


def test_the_champion_serves_predictions_over_rest(tiny_repo: Path):
    from conftest import serve_and_post

    texts = ["Shares rose after strong quarterly profits.", "The striker scored twice in the cup final."]
    [predictions] = serve_and_post(
        tiny_repo, "models:/transferlab-classifier-tiny@champion", {"inputs": texts}
    )
    labels = {"business", "entertainment", "politics", "sports", "tech"}
    assert len(predictions) == 2
    for row in predictions:
        assert row["label"] in labels and 0.0 <= row["score"] <= 1.0
