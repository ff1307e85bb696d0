"""The served form of a fine-tuned classifier: an MLflow pyfunc model (texts in, labels and scores
out). Loaded by `mlflow models serve` in its own process, so it imports only what it needs."""

from __future__ import annotations

import mlflow.pyfunc


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Wraps a Hugging Face sequence classifier saved as the artifact `model`."""

    def load_context(self, context):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from transferlab.models.torch_transformer import register

        register()  # the torch.nn encoder is not a built-in transformers architecture
        folder = context.artifacts["model"]
        # The server never runs code shipped inside a model folder.
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=False).eval()
        self.max_length = int(context.model_config.get("max_length", 128))
        self.truncation = context.model_config.get("truncation", "head")
        # windows: the same stride and cap as evaluate used (tracking/registry.py writes them)
        self.windows = {"stride": context.model_config.get("window_stride"),
                        "max_windows": context.model_config.get("max_windows")}
        self.torch = torch

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from transferlab.data.truncation import WINDOW_OF, encode, pool

        texts = to_texts(model_input)
        batch = encode(self.tokenizer, texts, self.max_length, self.truncation, **self.windows,
                       padding=True, return_tensors="pt")
        owner = batch.pop(WINDOW_OF, None)  # windows: pooled back to one row per text
        with self.torch.inference_mode():
            probabilities = pool(self.model(**batch).logits.float(), owner, len(texts)).softmax(-1)
        scores, ids = probabilities.max(-1)
        labels = [self.model.config.id2label[int(i)] for i in ids]
        return pd.DataFrame({"label": labels, "score": scores.tolist()})


def to_texts(model_input) -> list[str]:
    """Raw texts from what a client may send: a list, a string, a Series or a one-column frame."""
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[column].astype(str).tolist()
    return [str(text) for text in model_input]
