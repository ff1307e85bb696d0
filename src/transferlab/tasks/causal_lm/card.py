"""The model card of a fine-tuned causal language model (models/finetuned/README.md); the parts
every card shares are in transferlab.tracking.card."""

from __future__ import annotations

from transferlab.tracking import card as shared
from transferlab.tracking.identity import data_summary, model_summary


def language_model_card(cfg, metrics: dict, architecture: str) -> str:
    """The card of a fine-tuned causal language model: `metrics` are finetune's (validation
    perplexity before and after, blocks, epochs)."""
    title = f"transferlab language model: {model_summary(cfg)}"
    domain = cfg.lm.domain or "all"
    meta = shared.common_metadata(cfg, "text-generation") | {
        "tags": ["transferlab", "causal-lm", "text-generation", str(cfg.data.source)],
        "datasets": [data_summary(cfg)],
        "metrics": ["perplexity"],
        "model-index": [
            {
                "name": title,
                "results": [
                    {
                        "task": {"type": "text-generation", "name": "Causal Language Modeling"},
                        "dataset": {
                            "name": f"{data_summary(cfg)} ({domain})",
                            "type": str(cfg.data.source),
                            "split": "validation",
                        },
                        "metrics": [
                            {
                                "type": "perplexity",
                                "value": metrics["validation_perplexity_after"],
                                "name": "validation perplexity (best epoch)",
                            }
                        ],
                    }
                ],
            }
        ],
    }
    ft = cfg.finetune
    rows = [
        ("domain (label whose texts it trained on)", domain),
        ("block size (tokens)", cfg.model.max_length),
        ("training / validation blocks", f"{metrics['train_blocks']} / {metrics['validation_blocks']}"),
        ("epochs (max / run / best)", f"{ft.epochs} / {metrics['epochs_run']} / {metrics['best_epoch']}"),
        ("batch size", ft.batch_size),
        ("learning rate", ft.backbone_lr),
        ("weight decay", ft.weight_decay),
        ("warmup ratio", ft.warmup_ratio),
        ("early stopping patience (epochs)", ft.early_stopping_patience),
        ("seed", cfg.seed),
        ("precision (requested)", cfg.precision),
    ]
    if "parameters" in metrics:
        rows.append(("parameters", f"{metrics['parameters']:,}"))
    lines = [
        f"# {title}",
        "",
        "## Model description",
        "",
        f"A `{architecture}` decoder, fine-tuned by the transferlab pipeline (`task=causal_lm`) with "
        f"next-token training on {domain} text. Starting weights: "
        f"{shared.starting_weights(cfg, 'next-token training')}"
        + (
            " (the GGUF file's quantized weights, dequantized)"
            if cfg.model.init == "pretrained" and str(cfg.model.name_or_path).endswith(".gguf")
            else ""
        )
        + "; these are the weights of the best epoch.",
        "",
        "## Training data",
        "",
        f"Data: {shared.data_source(cfg)}; texts packed into blocks of {cfg.model.max_length} tokens. "
        "The test split is read by the evaluate stage only.",
        "",
        *shared.config_and_validation(
            rows,
            [
                ("perplexity before fine-tuning", metrics["validation_perplexity_before"]),
                ("perplexity after (best epoch)", metrics["validation_perplexity_after"]),
            ],
            "validation",
        ),
        "The test split is scored by `transferlab evaluate`: `metrics/evaluate.json`, and the description of "
        "the registered MLflow model version (this card plus its test results).",
        "",
        "## Limitations",
        "",
        "- It continues text; what it writes can be wrong, repetitive or off-topic, and it carries the "
        "biases of its training text" + (f" and of `{meta['base_model']}`." if "base_model" in meta else "."),
        f"- Trained on contexts of {cfg.model.max_length} tokens; longer prompts degrade.",
        f"- {shared.data_scope(cfg)}",
    ]
    return shared.front_matter(meta) + "\n" + "\n".join(lines) + "\n"
