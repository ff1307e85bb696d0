"""Stage `finetune` for task=causal_lm: more next-token training of models/pretrained on the domain
text (lm.domain: one label's texts, e.g. a BBC topic), with the classification fine-tune's
freezing, gradual unfreezing, LR groups, warmup and early stopping; the best epoch is kept.
Validation perplexity on the domain text is measured before and after."""

from __future__ import annotations

import json
import logging

from transferlab.contracts import FINETUNE_METRICS as METRICS
from transferlab.contracts import FINETUNED, PRETRAINED, TRAINING_LOG
from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.models.build import save_tokenizer
from transferlab.models.positions import check_positions
from transferlab.tasks.causal_lm import corpus
from transferlab.tasks.causal_lm.train import language_model_trainer, perplexity
from transferlab.training import techniques

log = logging.getLogger(__name__)


def wall_time(key: str) -> bool:
    """Trainer log keys that measure time (runtime, per-second rates, preparation time)."""
    return "runtime" in key or "per_second" in key or key.endswith("_time")


def load_decoder(
    trust_remote_code: bool = False,
    attention_dropout: float | None = None,
    hidden_dropout: float | None = None,
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transferlab.models.build import dropout_overrides
    from transferlab.tasks.causal_lm.model import register_architectures

    register_architectures()
    if not (PRETRAINED / "config.json").is_file():
        raise UserError(f"{PRETRAINED} has no model: run the train stage first (`dvc repro train`)")
    dropouts = dropout_overrides(PRETRAINED, attention_dropout, hidden_dropout)
    net = AutoModelForCausalLM.from_pretrained(PRETRAINED, trust_remote_code=trust_remote_code, **dropouts)
    return net, AutoTokenizer.from_pretrained(PRETRAINED, trust_remote_code=trust_remote_code)


def run(cfg) -> dict:
    from transformers import EarlyStoppingCallback

    from transferlab.outputs import staged_outputs
    from transferlab.stages.training_run import training_run
    from transferlab.tasks.causal_lm.card import language_model_card
    from transferlab.tracking.card import CARD
    from transferlab.training.kernels import use_kernels

    domain = cfg.lm.domain
    with training_run(
        cfg, "finetune", inputs=[PRETRAINED], tags={"task": cfg.task, "lm.domain": domain or "all"}
    ) as (run_log, checkpoints):
        prepared.log_splits(run_log, {name: prepared.read_split(name) for name in ("train", "validation")})
        check_positions(PRETRAINED, cfg.model.max_length)
        net, tok = load_decoder(
            cfg.model.trust_remote_code, cfg.finetune.attention_dropout, cfg.finetune.hidden_dropout
        )
        run_log.set_tags(use_kernels(net, cfg))
        ft = cfg.finetune  # layers first: a freezing that leaves nothing to train stops the stage here
        optimizer, layer_callbacks, sizes = techniques.configure_layers(net, ft, cfg.runtime, run_log)
        train_blocks = corpus.split_blocks("train", tok, cfg, domain=domain, limit=cfg.lm.max_train_blocks)
        eval_blocks = corpus.split_blocks("validation", tok, cfg, domain=domain, limit=cfg.lm.max_eval_blocks)
        overfitting = techniques.overfitting_callback(run_log)
        with checkpoints.workdir() as workdir:
            trainer = language_model_trainer(
                cfg,
                net,
                workdir,
                train_blocks,
                eval_blocks,
                [
                    EarlyStoppingCallback(ft.early_stopping_patience),
                    overfitting,
                    *layer_callbacks,
                    run_log.trainer_callback(),
                ],
                optimizers=(optimizer, None),  # the scheduler (warmup + linear decay) is Trainer's
                **checkpoints.trainer_arguments(**techniques.epoch_schedule(ft)),
            )
            before = trainer.evaluate()["eval_loss"]  # the starting model on the same blocks
            log.info("domain validation perplexity before fine-tuning: %.2f", perplexity(before))
            checkpoints.train(trainer, run_log)
            # train() starts a fresh log: the starting point goes first, as step 0.
            history = [{"epoch": 0.0, "step": 0, "eval_loss": before}, *trainer.state.log_history]
            evals = [entry for entry in history if "eval_loss" in entry][1:]
            best = min(evals, key=lambda entry: entry["eval_loss"])
            metrics = (
                {
                    "domain": domain or "all",
                    "train_blocks": len(train_blocks),
                    "validation_blocks": len(eval_blocks),
                    "block_size": cfg.model.max_length,
                    "epochs_run": round(evals[-1]["epoch"], 3),
                    "best_epoch": round(best["epoch"], 3),
                    "validation_loss_before": round(before, 6),
                    "validation_perplexity_before": perplexity(before),
                    "best_validation_loss": round(best["eval_loss"], 6),
                    "validation_perplexity_after": perplexity(best["eval_loss"]),
                }
                | sizes
                | {"overfitting_signals": techniques.overfitting_signals(trainer.state.log_history)}
            )
            with staged_outputs() as outs:
                folder = outs.path(FINETUNED, is_dir=True)
                trainer.save_model(str(folder))
                save_tokenizer(tok, folder)
                # Wall times stay out of the model folder, so its DVC hash is the same on a rerun.
                steady = [{k: v for k, v in entry.items() if not wall_time(k)} for entry in history]
                # Sorted keys: a resumed run reads the entries before its checkpoint back sorted.
                (folder / TRAINING_LOG).write_text(json.dumps(steady, indent=1, sort_keys=True) + "\n")
                outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
                (folder / CARD).write_text(language_model_card(cfg, metrics, type(net).__name__))
        run_log.log_metrics({k: v for k, v in metrics.items() if k != "domain"})
        seconds = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
        run_log.log_metrics({"train_seconds": seconds})  # MLflow only: the metrics file stays identical
        run_log.log_artifact(METRICS)
    log.info("fine-tuned the language model: %s", metrics)
    return metrics
