"""Stage `finetune`: a new classification head on models/pretrained, trained on the train split
with early stopping on validation loss; the best epoch's weights go to models/finetuned."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.train import PRETRAINED

log = logging.getLogger(__name__)
FINETUNED = Path("models/finetuned")
TRAINING_LOG = "training_log.json"  # Trainer's log history, saved with the model for `evaluate`
METRICS = "metrics/finetune.json"


def load_classifier(labels: list[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (PRETRAINED / "config.json").is_file():
        raise UserError(f"{PRETRAINED} has no model: run the train stage first (`dvc repro train`)")
    tok = AutoTokenizer.from_pretrained(PRETRAINED)
    # The checkpoint's own head (MLM or none) is dropped; a fresh one sized to these labels is built.
    net = AutoModelForSequenceClassification.from_pretrained(
        PRETRAINED,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    return net, tok


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def summary(history: list[dict]) -> dict:
    evals = [entry for entry in history if "eval_loss" in entry]
    best = min(evals, key=lambda entry: entry["eval_loss"])
    return {
        "epochs_run": round(evals[-1]["epoch"], 3),
        "best_epoch": round(best["epoch"], 3),
        "best_validation_loss": round(best["eval_loss"], 6),
        "best_validation_accuracy": round(best["eval_accuracy"], 6),
    }


def run(cfg) -> dict:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    from transferlab.outputs import staged_outputs
    from transferlab.runtime import resolve_device, seed_everything, training_arguments
    from transferlab.tracking import stage_run

    splits = [prepared.split_path("train"), prepared.split_path("validation")]
    digest = prepared.files_digest(splits)
    with stage_run("finetune", cfg, tags={"data.digest": digest}) as run_log:
        run_log.set_tags({"device": resolve_device(cfg.device), "precision": cfg.precision})
        seed_everything(cfg.seed)
        labels = prepared.read_labels()
        net, tok = load_classifier(labels)
        max_length = cfg.model.max_length
        train_set = prepared.tokenized(prepared.read_split("train"), tok, max_length)
        eval_set = prepared.tokenized(prepared.read_split("validation"), tok, max_length)
        ft = cfg.finetune
        with tempfile.TemporaryDirectory(prefix="transferlab-finetune-") as workdir:
            args = training_arguments(
                cfg, workdir,
                num_train_epochs=ft.epochs,
                per_device_train_batch_size=ft.batch_size,
                per_device_eval_batch_size=ft.batch_size,
                learning_rate=ft.lr,
                weight_decay=ft.weight_decay,
                warmup_steps=ft.warmup_ratio,
                eval_strategy="epoch",
                save_strategy="epoch",
                save_total_limit=2,  # the best and the latest
                save_only_model=True,
                load_best_model_at_end=True,
                metric_for_best_model="eval_loss",
                greater_is_better=False,
            )
            trainer = Trainer(
                model=net, args=args, train_dataset=train_set, eval_dataset=eval_set,
                data_collator=DataCollatorWithPadding(tok), processing_class=tok,
                compute_metrics=accuracy,
                callbacks=[EarlyStoppingCallback(ft.early_stopping_patience),
                           run_log.trainer_callback()],
            )
            trainer.train()
            history = trainer.state.log_history
            metrics = summary(history)
            with staged_outputs() as outs:
                folder = outs.path(FINETUNED, is_dir=True)
                trainer.save_model(str(folder))
                tok.save_pretrained(folder)
                (folder / TRAINING_LOG).write_text(json.dumps(history, indent=1) + "\n")
                outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        run_log.log_metrics(metrics)
        run_log.log_artifact(METRICS)
    log.info("fine-tuned: %s", metrics)
    return metrics
