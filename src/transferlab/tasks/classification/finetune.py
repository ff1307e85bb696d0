"""Stage `finetune`: a new classification head on models/pretrained, trained on the train split
with early stopping on validation loss; the best epoch's weights go to models/finetuned.
task=causal_lm: more next-token training on the domain text (tasks/causal_lm/finetune.py; the
switch is transferlab.stages)."""

from __future__ import annotations

import json
import logging

from transferlab.contracts import FINETUNE_METRICS as METRICS
from transferlab.contracts import FINETUNED, PRETRAINED, TRAINING_LOG
from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.models.build import save_tokenizer
from transferlab.models.positions import check_positions
from transferlab.training import techniques

log = logging.getLogger(__name__)


def load_classifier(
    labels: list[str],
    trust_remote_code: bool = False,
    attention_dropout: float | None = None,
    hidden_dropout: float | None = None,
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from transferlab.models.build import dropout_overrides, register_architectures

    register_architectures()
    if not (PRETRAINED / "config.json").is_file():
        raise UserError(f"{PRETRAINED} has no model: run the train stage first (`dvc repro train`)")
    tok = AutoTokenizer.from_pretrained(PRETRAINED, trust_remote_code=trust_remote_code)
    # The checkpoint's own head (MLM or none) is dropped; a fresh one sized to these labels is built.
    net = AutoModelForSequenceClassification.from_pretrained(
        PRETRAINED,
        trust_remote_code=trust_remote_code,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,
        **dropout_overrides(PRETRAINED, attention_dropout, hidden_dropout),
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
    from transferlab.outputs import staged_outputs
    from transferlab.stages.training_run import training_run
    from transferlab.tasks.classification.card import classifier_card
    from transferlab.tracking.card import CARD
    from transferlab.training import kernels, runtime
    from transferlab.training.callbacks import epoch_throughput

    with training_run(cfg, "finetune", inputs=[prepared.labels_path(), PRETRAINED]) as (run_log, checkpoints):
        # Imported once the run is open, so the run's start time marks the end of start-up.
        from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

        labels = prepared.read_labels()
        if len(labels) < 2:
            raise UserError(
                f"task=classification needs at least 2 labels; the prepared data has "
                f"{len(labels)} ({', '.join(labels)}): set data.label_column, or use "
                "task=causal_lm for unlabelled text"
            )
        frames = {name: prepared.read_split(name) for name in ("train", "validation")}
        prepared.log_splits(run_log, frames)
        check_positions(PRETRAINED, cfg.model.max_length)
        net, tok = load_classifier(
            labels, cfg.model.trust_remote_code, cfg.finetune.attention_dropout, cfg.finetune.hidden_dropout
        )
        run_log.set_tags(kernels.use_kernels(net, cfg))
        ft = cfg.finetune  # layers first: a freezing that leaves nothing to train stops the stage here
        optimizer, layer_callbacks, sizes = techniques.configure_layers(net, ft, cfg.runtime, run_log)
        max_length = cfg.model.max_length
        cut = {
            "truncation": cfg.model.truncation,
            "stride": cfg.model.window_stride,
            "max_windows": cfg.model.max_windows,
        }
        train_set = prepared.tokenized(frames["train"], tok, max_length, **cut)
        eval_set = prepared.tokenized(frames["validation"], tok, max_length, **cut)
        overfitting = techniques.overfitting_callback(run_log)
        throughput = epoch_throughput(  # MLflow only: wall time must stay out of the outputs
            sum(map(len, train_set["input_ids"])),
            lambda epoch, rate: run_log.log_metrics({"train_tokens_per_second": rate}, step=epoch),
        )
        with checkpoints.workdir() as workdir:
            args = runtime.training_arguments(
                cfg,
                workdir,
                lengths=list(map(len, train_set["input_ids"])),
                **checkpoints.trainer_arguments(**techniques.epoch_schedule(ft)),
            )
            run_log.set_tags({"train_sampling": args.train_sampling_strategy})
            trainer = Trainer(
                model=net,
                args=args,
                train_dataset=train_set,
                eval_dataset=eval_set,
                data_collator=DataCollatorWithPadding(tok),
                processing_class=tok,
                compute_metrics=accuracy,
                optimizers=(optimizer, None),  # the scheduler (warmup + linear decay) is Trainer's
                callbacks=[
                    EarlyStoppingCallback(ft.early_stopping_patience),
                    overfitting,
                    *layer_callbacks,
                    throughput,
                    run_log.trainer_callback(),
                ],
            )
            checkpoints.train(trainer, run_log)
            history = trainer.state.log_history
            signals = techniques.overfitting_signals(history)
            metrics = summary(history) | sizes | {"overfitting_signals": signals}
            with staged_outputs() as outs:
                folder = outs.path(FINETUNED, is_dir=True)
                trainer.save_model(str(folder))
                save_tokenizer(tok, folder)
                # Wall times stay out of the model folder, so its DVC hash is the same on a rerun.
                steady = [
                    {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k}
                    for entry in history
                ]
                # Sorted keys: a resumed run reads the entries before its checkpoint back sorted.
                (folder / TRAINING_LOG).write_text(json.dumps(steady, indent=1, sort_keys=True) + "\n")
                # The precision `auto` resolved to on this machine: `dvc metrics diff` / `dvc exp show`
                # then show when the same params.yaml ran differently elsewhere.
                resolved = {"precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"}
                outs.path(METRICS).write_text(json.dumps(metrics | resolved, indent=2) + "\n")
                # The Hugging Face model card: config, data, validation results (test: evaluate's).
                (folder / CARD).write_text(
                    classifier_card(cfg, labels, frames, metrics, type(net).__name__, resolved["precision"])
                )
        run_log.log_metrics(metrics)
        # Wall time goes to MLflow only: the metrics file must be identical on a rerun.
        seconds = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
        run_log.log_metrics({"train_seconds": seconds})
        run_log.log_artifact(METRICS)
    log.info("fine-tuned: %s", metrics)
    return metrics
