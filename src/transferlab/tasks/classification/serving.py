"""The served form of a fine-tuned classifier: an MLflow pyfunc model (texts in, labels and scores
out). Loaded by `mlflow models serve` in its own process, so it imports only what it needs."""

from __future__ import annotations

import mlflow.pyfunc


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Wraps a Hugging Face sequence classifier saved as the artifact `model`."""

    def load_context(self, context):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from transferlab.models.torch_transformer import register

        register()  # the torch.nn encoder is not a built-in transformers architecture
        folder = context.artifacts["model"]
        # The server never runs code shipped inside a model folder.
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=False
        ).eval()
        # How evaluate cut (and, for windows, pooled) the texts: tracking/registry.py writes it.
        self.reading = {
            "max_length": int(context.model_config.get("max_length", 128)),
            "truncation": context.model_config.get("truncation", "head"),
            "stride": context.model_config.get("window_stride"),
            "max_windows": context.model_config.get("max_windows"),
        }

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = to_texts(model_input)
        probabilities = class_probabilities(
            self.model,
            self.tokenizer,
            texts,
            device="cpu",
            batch_size=max(len(texts), 1),
            progress=False,
            **self.reading,
        )
        ids = probabilities.argmax(-1)
        labels = [self.model.config.id2label[int(i)] for i in ids]
        return pd.DataFrame({"label": labels, "score": probabilities.max(-1).tolist()})


def class_probabilities(
    net,
    tok,
    texts: list[str],
    max_length: int,
    batch_size: int,
    device: str,
    truncation: str = "head",
    stride: int | None = None,
    max_windows: int | None = None,
    progress: bool = True,
):
    """Class probabilities for each text, in order, for evaluate and the server alike; windows: the
    softmax of the mean of the text's windows' logits (data/truncation.py). `progress`: a tqdm bar
    (on a terminal), not wanted once per REST request."""
    import torch
    from tqdm.auto import tqdm

    from transferlab.data.truncation import WINDOW_OF, encode, pool

    net.to(device).eval()
    probabilities = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size),
            desc="evaluating",
            unit="batch",
            disable=None if progress else True,
        ):
            chunk = texts[start : start + batch_size]
            batch = encode(
                tok,
                chunk,
                max_length,
                truncation,
                stride=stride,
                max_windows=max_windows,
                padding=True,
                return_tensors="pt",
            ).to(device)
            owner = batch.pop(WINDOW_OF, None)
            # windows: a chunk may hold up to max_windows rows per text; run batch_size at a time
            logits = torch.cat(
                [
                    net(**{key: rows[i : i + batch_size] for key, rows in batch.items()}).logits.float()
                    for i in range(0, len(batch["input_ids"]), batch_size)
                ]
            )
            probabilities.append(pool(logits, owner, len(chunk)).softmax(-1).cpu())
    return torch.cat(probabilities).numpy()


def to_texts(model_input) -> list[str]:
    """Raw texts from what a client may send: a list, a string, a Series or a one-column frame."""
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].astype(str).tolist()
    return [str(text) for text in model_input]
