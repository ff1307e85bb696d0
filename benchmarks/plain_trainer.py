"""The reference point: fine-tuning written the simple way a user would, with transformers.Trainer
and its defaults (padding to max_length, no length grouping), on the same prepared data, model,
batch size, sequence length, epochs and learning rate as the pipeline's fine-tune. --bf16 is what a
user passes where the machine runs bf16 natively (make bench does so there: the fair comparison).

    python benchmarks/plain_trainer.py PREPARED_DIR MODEL_DIR OUT.json --epochs 3 --batch-size 32 \
        --max-length 128 --lr 1e-4 --seed 42 [--bf16] [--freeze-embeddings] [--freeze-layers 2]

Freezing is written the plain way too: `requires_grad_(False)` on the embeddings and the lowest
layers, which Trainer's optimizer then leaves out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prepared", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (Trainer's --bf16)")
    parser.add_argument("--freeze-embeddings", action="store_true")
    parser.add_argument("--freeze-layers", type=int, default=0, help="the lowest N encoder layers")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from transferlab.training.callbacks import epoch_throughput  # measurement only: times each epoch

    labels = json.loads((args.prepared / "labels.json").read_text())
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))
    if args.freeze_embeddings:
        model.base_model.embeddings.requires_grad_(False)
    for layer in model.base_model.encoder.layer[: args.freeze_layers]:
        layer.requires_grad_(False)

    def encode(split: str) -> Dataset:
        frame = pd.read_parquet(args.prepared / f"{split}.parquet")
        data = Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
        return data.map(
            lambda b: tok(b["text"], truncation=True, padding="max_length", max_length=args.max_length),
            batched=True,
        )

    train, validation, test = encode("train"), encode("validation"), encode("test")
    real_tokens = int(np.asarray(train["attention_mask"]).sum())  # padding is not a real token
    rates: list[float] = []
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(args.output.parent / "plain-trainer-out"),
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.lr,
            eval_strategy="epoch",
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            use_cpu=True,
            logging_steps=10,
            bf16=args.bf16,
        ),
        train_dataset=train,
        eval_dataset=validation,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        callbacks=[epoch_throughput(real_tokens, lambda epoch, rate: rates.append(rate))],
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    evaluations = sum(e["eval_runtime"] for e in trainer.state.log_history if "eval_runtime" in e)
    steps = trainer.state.global_step
    predictions = trainer.predict(test)
    args.output.write_text(
        json.dumps(
            {
                "train_seconds": round(wall - evaluations, 3),
                "steps": steps,
                "real_tokens": real_tokens * trainer.state.epoch,
                "epoch_tokens_per_second": rates,
                "precision": "bf16" if args.bf16 else "fp32",
                "test_accuracy": float((predictions.predictions.argmax(-1) == predictions.label_ids).mean()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
