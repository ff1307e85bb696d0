"""The served form of a causal LM: an MLflow pyfunc model, prompts in, generated text out.
Loaded by `mlflow models serve` in its own process, so it imports only what it needs."""

from __future__ import annotations

import mlflow.pyfunc

KEYS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")


def serving_config(gen) -> dict:
    """The generation settings the served model uses (a request's `params` may override them)."""
    return {key: getattr(gen, key) for key in KEYS}


class TextGenerator(mlflow.pyfunc.PythonModel):
    """Wraps a Hugging Face causal LM: the folder DVC keeps under the hash `model_config["weights"]`
    records (tracking/weights.py), or for versions logged before that, the artifact `model`."""

    def load_context(self, context):
        from contextlib import nullcontext

        from transformers import AutoModelForCausalLM, AutoTokenizer

        from transferlab.models.torch_decoder import register
        from transferlab.tasks.classification.serving import check_requests_in_the_scoring_server
        from transferlab.tracking.weights import materialized

        register()  # the torch.nn decoder is not a built-in transformers architecture
        check_requests_in_the_scoring_server()  # a prompt that is not a string: 400, as for the classifier
        self.settings = dict(context.model_config or {})
        weights = self.settings.get("weights")
        with materialized(weights) if weights else nullcontext(context.artifacts["model"]) as folder:
            # The server never runs code shipped inside a model folder.
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False).eval()

    def predict(self, context, model_input, params=None):
        from types import SimpleNamespace

        import pandas as pd

        from transferlab.tasks.causal_lm.generate import generate
        from transferlab.tasks.classification.serving import to_texts

        settings = {key: value for key, value in self.settings.items() if key in KEYS}
        settings |= {key: value for key, value in (params or {}).items() if key in KEYS}
        texts = generate(self.model, self.tokenizer, to_texts(model_input), SimpleNamespace(**settings))
        return pd.DataFrame({"text": texts})
