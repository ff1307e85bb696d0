"""Stage `train`: the language model. Scratch = masked-LM pretraining from random weights;
pretrained + steps > 0 = continued (domain-adaptive) pretraining; steps = 0 passes weights through.
task=causal_lm: the same for a decoder with next-token training (transferlab.lm.train)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

from transferlab import model as models
from transferlab.data import prepared

log = logging.getLogger(__name__)
PRETRAINED = Path("models/pretrained")
METRICS = "metrics/train.json"


def train_masked_lm(cfg, net, tok, run_log, workdir: str, splits: dict) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer

    from transferlab.runtime import adamw, stop_on_nan, training_arguments

    max_length = cfg.model.max_length
    train_set = prepared.tokenized(splits["train"], tok, max_length, labels=False)
    eval_set = prepared.tokenized(splits["validation"], tok, max_length, labels=False)
    args = training_arguments(
        cfg, workdir,
        max_steps=cfg.train.steps,
        per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_ratio,
        eval_strategy="steps",  # a validation MLM-loss curve, five points over the run
        eval_steps=max(1, cfg.train.steps // 5),
    )
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=cfg.train.mlm_probability,
                                               seed=cfg.seed)
    trainer = Trainer(model=net, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=collator, callbacks=[stop_on_nan("train"), run_log.trainer_callback()],
                      optimizer_cls_and_kwargs=adamw(cfg.runtime, cfg.train.lr))
    result = trainer.train()
    evaluation = trainer.evaluate()
    metrics = {
        "steps": cfg.train.steps,
        "train_loss": round(result.training_loss, 6),
        "validation_loss": round(evaluation["eval_loss"], 6),
        "validation_perplexity": round(math.exp(min(evaluation["eval_loss"], 50)), 4),
    }
    run_log.log_metrics({"train_seconds": result.metrics["train_runtime"]})  # MLflow only: wall time
    return metrics


def run(cfg) -> dict:
    from transferlab.outputs import staged_outputs
    from transferlab.runtime import resolve_device, seed_everything
    from transferlab.tracking import stage_run

    if cfg.task == "causal_lm":  # next-token training of a decoder: transferlab.lm
        from transferlab.lm import train as causal_lm

        return causal_lm.run(cfg)
    digest = prepared.files_digest([prepared.split_path("train"), prepared.split_path("validation")])
    with stage_run("train", cfg, tags={"data.digest": digest}) as run_log:
        device = resolve_device(cfg.device)
        run_log.set_tags({"device": device, "precision": cfg.precision})
        seed_everything(cfg.seed)
        splits = {name: prepared.read_split(name) for name in ("train", "validation")}
        prepared.log_splits(run_log, splits)
        run_log.link("prepare")
        tok = models.tokenizer(cfg.model, splits["train"]["text"].tolist())
        net = models.encoder(cfg.model, tok, masked_lm=cfg.train.steps > 0)
        if cfg.train.steps > 0:
            with tempfile.TemporaryDirectory(prefix="transferlab-train-") as workdir:
                metrics = train_masked_lm(cfg, net, tok, run_log, workdir, splits)
        else:
            log.info("train.steps=0: passing the starting weights through unchanged")
            metrics = {"steps": 0}
        metrics["parameters"] = net.num_parameters()
        run_log.log_metrics(metrics)
        with staged_outputs() as outs:
            folder = outs.path(PRETRAINED, is_dir=True)
            net.save_pretrained(folder)  # safetensors
            tok.save_pretrained(folder)
            outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        run_log.log_artifact(METRICS)
    return metrics
