"""The stages and the one place that switches on `task`: which module runs each stage for each task.
Every module named here has one public function `run(cfg)`."""

from __future__ import annotations

import importlib

TASKS = ("classification", "causal_lm")
STAGES = {  # name: (summary, {task: module})
    "prepare": ("split the dataset into train/validation/test",
                dict.fromkeys(TASKS, "transferlab.data.prepare")),
    "train": ("language-model training (scratch, continued, or pass-through)",
              {"classification": "transferlab.train", "causal_lm": "transferlab.lm.train"}),
    "finetune": ("fine-tune a classifier (task=causal_lm: the LM on domain text) with early stopping",
                 {"classification": "transferlab.finetune", "causal_lm": "transferlab.lm.finetune"}),
    "evaluate": ("score the fine-tuned model on the test split (task=causal_lm: perplexity and "
                 "generations)",
                 {"classification": "transferlab.evaluate", "causal_lm": "transferlab.lm.evaluate"}),
}


def module(stage: str, task: str) -> str:
    return STAGES[stage][1][task]


def run(stage: str, cfg) -> dict:
    """Run `stage` for the config's task; returns the stage's metrics."""
    return importlib.import_module(module(stage, cfg.task)).run(cfg)
