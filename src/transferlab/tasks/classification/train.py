"""Stage `train`: the language model. Scratch = masked-LM pretraining from random weights;
pretrained + steps > 0 = continued (domain-adaptive) pretraining; steps = 0 passes weights through.
task=causal_lm: the same for a decoder with next-token training (transferlab.tasks.causal_lm.train; the switch
is transferlab.stages)."""

from __future__ import annotations

import hashlib
import json
import logging
import math

from transferlab.contracts import PRETRAINED
from transferlab.contracts import TRAIN_METRICS as METRICS
from transferlab.data import prepared
from transferlab.models import build

log = logging.getLogger(__name__)


def masking_collator(tok, probability: float, seed: int):
    """MLM masking seeded per example from (seed, epoch, the example's tokens): each example's
    mask is the same whichever batch or process it lands in and whether or not the run was
    resumed mid-epoch (a collator with one generator would restart it on resume), and it still
    changes every epoch (dynamic masking)."""
    import torch
    from transformers import DataCollatorForLanguageModeling, TrainerCallback

    class ExampleSeededMasking(DataCollatorForLanguageModeling):
        epoch = 0

        def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
            labels = torch.full_like(inputs, -100)
            inputs = inputs.clone()
            for i, row in enumerate(inputs):
                kept = (row != self.tokenizer.pad_token_id).nonzero()
                length = int(kept.max()) + 1 if len(kept) else 0  # padding is on the right
                tokens = row[:length]
                key = hashlib.sha256(f"{seed}/{self.epoch}/{tokens.tolist()}".encode()).digest()
                self.generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
                special = None if special_tokens_mask is None else special_tokens_mask[i : i + 1, :length]
                inputs[i : i + 1, :length], labels[i : i + 1, :length] = super().torch_mask_tokens(
                    tokens[None].clone(), special
                )
            return inputs, labels

    class EpochToCollator(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            collator.epoch = int((state.epoch or 0) + 1e-6)

    collator = ExampleSeededMasking(tok, mlm_probability=probability)
    return collator, EpochToCollator()


def train_masked_lm(cfg, net, tok, run_log, checkpoints, workdir: str, splits: dict) -> dict:
    from transformers import Trainer

    from transferlab.training.runtime import adamw, training_arguments

    max_length = cfg.model.max_length
    train_set = prepared.tokenized(splits["train"], tok, max_length, labels=False)
    eval_set = prepared.tokenized(splits["validation"], tok, max_length, labels=False)
    args = training_arguments(
        cfg,
        workdir,
        lengths=list(map(len, train_set["input_ids"])),
        max_steps=cfg.train.steps,
        per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_ratio,
        eval_strategy="steps",  # a validation MLM-loss curve, five points over the run
        eval_steps=max(1, cfg.train.steps // 5),
        **checkpoints.trainer_arguments(),
    )
    collator, epoch_callback = masking_collator(tok, cfg.train.mlm_probability, cfg.seed)
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        callbacks=[epoch_callback, run_log.trainer_callback()],
        optimizer_cls_and_kwargs=adamw(cfg.runtime, cfg.train.lr),
    )
    result = checkpoints.train(trainer, run_log)
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
    from transferlab.stages.training_run import training_run
    from transferlab.training.kernels import use_kernels

    with training_run(cfg, "train") as (run_log, checkpoints):
        splits = {name: prepared.read_split(name) for name in ("train", "validation")}
        prepared.log_splits(run_log, splits)
        tok = build.tokenizer(cfg.model, splits["train"]["text"].tolist())
        net = build.encoder(cfg.model, tok, masked_lm=cfg.train.steps > 0)
        run_log.set_tags(use_kernels(net, cfg))
        with checkpoints.workdir() as workdir:
            if cfg.train.steps > 0:
                metrics = train_masked_lm(cfg, net, tok, run_log, checkpoints, workdir, splits)
            else:
                log.info("train.steps=0: passing the starting weights through unchanged")
                metrics = {"steps": 0}
            metrics["parameters"] = net.num_parameters()
            run_log.log_metrics(metrics)
            with staged_outputs() as outs:
                folder = outs.path(PRETRAINED, is_dir=True)
                net.save_pretrained(folder)  # safetensors
                build.save_tokenizer(tok, folder)
                outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        run_log.log_artifact(METRICS)
    return metrics
