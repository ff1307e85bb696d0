"""Stage `train` for task=causal_lm: next-token pretraining from random weights (scratch),
continued pretraining of a pretrained decoder (steps > 0), or with steps = 0 the pretrained weights
passed through: a GGUF file becomes a regular safetensors checkpoint + tokenizer here, once."""

from __future__ import annotations

import json
import logging
import math

from transferlab.contracts import PRETRAINED
from transferlab.contracts import TRAIN_METRICS as METRICS
from transferlab.data import prepared
from transferlab.models.build import save_tokenizer
from transferlab.tasks.causal_lm import corpus
from transferlab.tasks.causal_lm import model as decoders

log = logging.getLogger(__name__)


def perplexity(loss: float) -> float:
    return round(math.exp(min(loss, 50)), 4)


def language_model_trainer(
    cfg, net, workdir: str, train_blocks, eval_blocks, callbacks, *, optimizers=(None, None), **overrides
):
    """A Trainer on packed blocks: the labels are the inputs, shifted inside the model."""
    from transformers import Trainer, default_data_collator

    from transferlab.training.runtime import adamw, training_arguments

    args = training_arguments(cfg, workdir, **overrides)
    own_optimizer = None if optimizers[0] else adamw(cfg.runtime, args.learning_rate)
    return Trainer(
        model=net,
        args=args,
        data_collator=default_data_collator,
        train_dataset=None if train_blocks is None else corpus.dataset(train_blocks),
        eval_dataset=corpus.dataset(eval_blocks),
        callbacks=callbacks,
        optimizers=optimizers,
        optimizer_cls_and_kwargs=own_optimizer,
    )


def run(cfg) -> dict:
    from transferlab.outputs import staged_outputs
    from transferlab.stages.training_run import training_run
    from transferlab.training.kernels import use_kernels
    from transferlab.training.runtime import seed_everything

    with training_run(cfg, "train", tags={"task": cfg.task}) as (run_log, checkpoints):
        splits = {name: prepared.read_split(name) for name in ("train", "validation")}
        prepared.log_splits(run_log, splits)
        tok = decoders.tokenizer(cfg.model, splits["train"]["text"].tolist())
        net = decoders.decoder(cfg.model, tok)
        run_log.set_tags(use_kernels(net, cfg))
        seed_everything(cfg.seed)
        eval_blocks = corpus.split_blocks("validation", tok, cfg, limit=cfg.lm.max_eval_blocks)
        steps = cfg.train.steps
        with checkpoints.workdir() as workdir:
            train_blocks = corpus.split_blocks("train", tok, cfg) if steps > 0 else None
            trainer = language_model_trainer(
                cfg,
                net,
                workdir,
                train_blocks,
                eval_blocks,
                [run_log.trainer_callback()],
                max_steps=max(steps, 1),
                per_device_train_batch_size=cfg.train.batch_size,
                per_device_eval_batch_size=cfg.train.batch_size,
                learning_rate=cfg.train.lr,
                weight_decay=cfg.train.weight_decay,
                warmup_steps=cfg.train.warmup_ratio,
                eval_strategy="steps" if steps > 0 else "no",
                eval_steps=max(1, steps // 5),
                **checkpoints.trainer_arguments(),
            )
            metrics = {"steps": steps}
            if steps > 0:
                result = checkpoints.train(trainer, run_log)
                metrics["train_loss"] = round(result.training_loss, 6)
                run_log.log_metrics({"train_seconds": result.metrics["train_runtime"]})  # MLflow only
            else:
                log.info("train.steps=0: passing the starting weights through unchanged")
            evaluation = trainer.evaluate()
            metrics |= {
                "validation_loss": round(evaluation["eval_loss"], 6),
                "validation_perplexity": perplexity(evaluation["eval_loss"]),
                "validation_blocks": len(eval_blocks),
                "block_size": cfg.model.max_length,
                "parameters": net.num_parameters(),
            }
            run_log.log_metrics(metrics)
            with staged_outputs() as outs:  # inside: the checkpoints go only once these are written
                folder = outs.path(PRETRAINED, is_dir=True)
                net.save_pretrained(folder)  # safetensors
                save_tokenizer(tok, folder)
                outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        run_log.log_artifact(METRICS)
    log.info("language model: %s", metrics)
    return metrics
