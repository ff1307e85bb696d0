"""The pipeline's stages, in dvc.yaml's order, and the one place that switches on `task`.
`prepare` is the same for every task (stages/prepare.py); train, finetune and evaluate run
tasks/<task>/<stage>.py. Every stage module has one public function `run(cfg)`."""

from __future__ import annotations

import importlib

TASKS = ("classification", "causal_lm")  # config group `task`, one package each under tasks/
SUMMARIES = {
    "prepare": "split the dataset into train/validation/test",
    "train": "language-model training (scratch, continued, or pass-through)",
    "finetune": "fine-tune a classifier (task=causal_lm: the LM on domain text) with early stopping",
    "evaluate": "score the fine-tuned model on the test split (task=causal_lm: perplexity and generations)",
}


def module(stage: str, task: str) -> str:
    """The module that runs `stage` for `task`."""
    return "transferlab.stages.prepare" if stage == "prepare" else f"transferlab.tasks.{task}.{stage}"


# name: (summary, {task: module})
STAGES = {
    stage: (summary, {task: module(stage, task) for task in TASKS}) for stage, summary in SUMMARIES.items()
}


def run(stage: str, cfg) -> dict:
    """Run `stage` for the config's task; returns the stage's metrics."""
    return importlib.import_module(module(stage, cfg.task)).run(cfg)
