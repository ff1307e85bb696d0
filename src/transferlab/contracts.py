"""The paths the stages hand to each other (dvc.yaml's outs, metrics and plots), named once here so
that a stage reads another's outputs without importing that stage."""

from __future__ import annotations

from pathlib import Path

PRETRAINED = Path("models/pretrained")  # train -> finetune, evaluate (task=causal_lm)
FINETUNED = Path("models/finetuned")  # finetune -> evaluate
TRAINING_LOG = "training_log.json"  # Trainer's log history, saved with the fine-tuned model for evaluate
TRAIN_METRICS = "metrics/train.json"
FINETUNE_METRICS = "metrics/finetune.json"
EVALUATE_METRICS = "metrics/evaluate.json"
PLOTS = Path("plots")  # one DVC out: the learning curves (every task) and the task's own plots
REPORTS = Path("reports/evaluate")  # one DVC out: the task's reports
