"""The model card of a fine-tuned classifier (models/finetuned/README.md); the parts every card
shares are in transferlab.tracking.card."""

from __future__ import annotations

from transferlab.data.truncation import window_stride
from transferlab.tracking import card as shared
from transferlab.tracking.identity import data_summary, model_summary


def classifier_card(
    cfg, labels: list[str], frames: dict, metrics: dict, architecture: str, precision: str | None
) -> str:
    """The card of a fine-tuned classifier: `frames` are the train and validation splits (label ids),
    `metrics` finetune's (best epoch's validation loss and accuracy, epochs, parameter counts)."""
    title = f"transferlab text classifier: {model_summary(cfg)}"
    meta = shared.common_metadata(cfg, "text-classification") | {
        "tags": [
            "transferlab",
            "text-classification",
            str(cfg.data.source),
            str(cfg.model.arch) if cfg.model.init == "scratch" else "fine-tuned",
        ],
        "datasets": [data_summary(cfg)],
        "metrics": ["accuracy", "loss"],
        "model-index": [
            {
                "name": title,
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Text Classification"},
                        "dataset": {
                            "name": data_summary(cfg),
                            "type": str(cfg.data.source),
                            "split": "validation",
                        },
                        "metrics": [
                            {
                                "type": "accuracy",
                                "value": metrics["best_validation_accuracy"],
                                "name": "validation accuracy (best epoch)",
                            },
                            {
                                "type": "loss",
                                "value": metrics["best_validation_loss"],
                                "name": "validation loss (best epoch)",
                            },
                        ],
                    }
                ],
            }
        ],
    }
    counts = {name: frame["label"].value_counts().to_dict() for name, frame in frames.items()}
    label_rows = [
        (i, label, counts["train"].get(i, 0), counts["validation"].get(i, 0))
        for i, label in enumerate(labels)
    ]
    cap = f"; at most {cfg.data.max_per_label} texts per label" if cfg.data.max_per_label else ""
    lines = [
        f"# {title}",
        "",
        "## Model description",
        "",
        f"A `{architecture}` with {len(labels)} labels, fine-tuned by the transferlab pipeline (DVC stages "
        "prepare -> train -> finetune -> evaluate). Starting weights: "
        f"{shared.starting_weights(cfg, 'masked-language-model training')}. `finetune` put a new "
        "classification head on them and trained the whole model with early stopping on validation "
        "loss; these are the weights of the best epoch.",
        "",
        "## Training data and labels",
        "",
        f"Data: {shared.data_source(cfg)}{cap}. Split per label with seed {cfg.seed}: "
        f"{len(frames['train'])} training and {len(frames['validation'])} validation texts; the test split "
        f"({cfg.data.test_fraction:.0%}) is read by the evaluate stage only.",
        "",
        *shared.table(label_rows, ("id", "label", "train", "validation")),
        "",
        *shared.config_and_validation(
            shared.training_rows(cfg, metrics, precision),
            [("accuracy", metrics["best_validation_accuracy"]), ("loss", metrics["best_validation_loss"])],
            "validation (best epoch)",
        ),
        "The epoch was chosen on this validation split, so these figures are optimistic. The test split "
        "is scored after this card is written, by `transferlab evaluate`: `metrics/evaluate.json`, and "
        "the description of the registered MLflow model version (this card plus its test results).",
        "",
        "## How to use",
        "",
        "```python",
        *(
            [
                "from transferlab.models.build import register_architectures",
                "register_architectures()  # the torch.nn encoder is not a transformers class",
            ]
            if cfg.model.arch == "torch_transformer" and cfg.model.init == "scratch"
            else []
        ),
        "from transformers import pipeline",
        'classify = pipeline("text-classification", model="models/finetuned")',
        'classify("Shares rose after strong profits.")',
        "```",
        "",
        "## Limitations",
        "",
        f"- It knows only these {len(labels)} labels: every text gets one of them, also a text about "
        "something else. Scores are softmax outputs, not calibrated probabilities.",
        truncation_line(cfg.model),
        f"- Trained on {len(frames['train'])} texts: {shared.data_scope(cfg)}",
        *(
            ["- A model from random weights on capped data: a smoke test, not a usable classifier."]
            if cfg.model.init == "scratch" and cfg.data.max_per_label
            else []
        ),
    ]
    return shared.front_matter(meta) + "\n" + "\n".join(lines) + "\n"


def truncation_line(model) -> str:
    """How the model reads a text longer than model.max_length (transferlab.data.truncation)."""
    if model.truncation == "head":
        return f"- Texts are cut to their first {model.max_length} tokens."
    if model.truncation == "head_tail":
        return (
            f"- Texts are cut to {model.max_length} tokens: the first quarter and the last three "
            "quarters of a longer text (transferlab.data.truncation; a plain pipeline keeps the first)."
        )
    stride = window_stride(model.max_length, model.window_stride)
    return (
        f"- Texts are read in windows of {model.max_length} tokens that share {stride} tokens, at most "
        f"{model.max_windows} per text (its first ones); it was fine-tuned on every window with its "
        "text's label, so the validation figures above are per window, and a prediction averages "
        "the windows' logits (transferlab.data.truncation; a plain pipeline keeps the first "
        f"{model.max_length} tokens)."
    )
