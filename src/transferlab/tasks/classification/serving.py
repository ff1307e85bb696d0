"""The served form of a fine-tuned classifier: an MLflow pyfunc model (texts in, labels and scores
out). Loaded by `mlflow models serve` in its own process, so it imports only what it needs.
`python -m transferlab.tasks.classification.serving URI NAME` (`make serve` runs it first): exit 1
with one line when URI has no @champion of the registered model NAME."""

from __future__ import annotations

import sys
import warnings

import mlflow.pyfunc

# Texts per forward pass when the model config records no `batch_size` (evaluate.batch_size's
# default): a request of any size runs in batches of this many, so the server's memory stays bounded.
BATCH_SIZE = 64
EXAMPLE = 'send texts, e.g. {"inputs": ["some text"]}'


# Defining the class, MLflow warns that predict has no type hints, whatever the warning filters
# (recorded here, not shown): the logged signature and to_texts check the input, and the server's
# log and `make serve`'s one line stay free of it.
with warnings.catch_warnings(record=True):

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
            config = context.model_config or {}
            self.reading = {
                "max_length": int(config.get("max_length", 128)),
                "truncation": config.get("truncation", "head"),
                "stride": config.get("window_stride"),
                "max_windows": config.get("max_windows"),
            }
            self.batch_size = int(config.get("batch_size") or BATCH_SIZE)
            check_requests_in_the_scoring_server()

        def predict(self, context, model_input, params=None):
            import pandas as pd

            texts = to_texts(model_input)
            if not texts:
                return pd.DataFrame({"label": pd.Series(dtype=str), "score": pd.Series(dtype=float)})
            probabilities = class_probabilities(
                self.model,
                self.tokenizer,
                texts,
                device="cpu",
                batch_size=self.batch_size,
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
    """Raw texts from what a client may send: a list, a string, a Series or a frame (its column
    `text`, else its first). Anything but a string refuses the request (MLflow answers 400)."""
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        items, where = model_input[column].tolist(), lambda row: f"row {row} of column {str(column)!r}"
    elif isinstance(model_input, (list, tuple)) or hasattr(model_input, "tolist"):
        items, where = list(model_input), lambda position: f"inputs[{position}]"
    else:
        raise refusal(f"inputs is {described(model_input)}, not a list of strings: {EXAMPLE}")
    # records under `inputs` arrive as one-element numpy arrays: their element
    items = [item.item() if getattr(item, "ndim", None) == 0 else item for item in items]
    if not items:
        raise refusal(f"there is no text in the request: {EXAMPLE}")
    check_strings(items, where)
    return [str(text) for text in items]  # numpy's str_ as str


def check_strings(items: list, where) -> None:
    """Refuse the request at the first item that is not a string, naming it and its position
    (`where(position)`: how the client wrote it, e.g. `inputs[1]`)."""
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise refusal(f"{where(position)} is {described(item)}, not a string: {EXAMPLE}")


def described(item) -> str:
    """A value as its JSON type and text: `a number (42)`, `null`, `an object ({"x": 1})`."""
    import json

    import pandas as pd

    if item is None or (pd.api.types.is_scalar(item) and pd.isna(item)):
        return "null"
    value = item.tolist() if hasattr(item, "tolist") else item  # numpy's scalars and arrays
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, dict):
        kind = "an object"
    elif isinstance(value, (list, tuple)):
        kind = "an array"
    else:
        kind = f"a {type(item).__name__}"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(item)
    return f"{kind} ({text if len(text) <= 60 else text[:57] + '...'})"


def refusal(message: str):
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)  # the scoring server's 400


def check_requests_in_the_scoring_server() -> None:
    """In `mlflow models serve`, check each JSON request's `inputs` / `instances` as the client sent
    them: MLflow casts them to the signature's string type before predict sees them (42, null and
    {"x": 1} would arrive as "42", "None" and "{'x': 1}"). `dataframe_split` and `dataframe_records`
    reach predict uncast (to_texts checks them). Nothing happens outside the scoring server."""
    import functools

    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    parse = getattr(server, "infer_and_parse_data", None)
    if parse is None or getattr(parse, "checks_texts", False):
        return

    @functools.wraps(parse)
    def checked(data, *args, **kwargs):
        for key in ("inputs", "instances"):
            if not isinstance(data, dict) or key not in data:
                continue
            value = data[key]
            if isinstance(value, list) and not value:  # MLflow's answer would be about its signature
                raise refusal(f"{key} is an empty list: {EXAMPLE}")
            if isinstance(value, list) and all(isinstance(item, dict) for item in value):
                check_records(value, key)
            elif isinstance(value, list):
                check_strings(value, lambda position, key=key: f"{key}[{position}]")
            elif not isinstance(value, (str, dict)):  # a dict: MLflow refuses it by itself
                raise refusal(f"{key} is {described(value)}, not a list of strings: {EXAMPLE}")
        return parse(data, *args, **kwargs)

    checked.checks_texts = True
    server.infer_and_parse_data = checked


def check_records(records: list[dict], key: str) -> None:
    """Records ([{"text": ...}, ...]): the column the model reads (to_texts) must hold strings."""
    columns = list(dict.fromkeys(column for record in records for column in record))
    column = "text" if "text" in columns else columns[0] if columns else None
    for position, record in enumerate(records):
        if not isinstance(record.get(column), str):
            item = described(record.get(column))
            raise refusal(f"{key}[{position}].{column} is {item}, not a string: {EXAMPLE}")


def champion_problem(uri: str, name: str, alias: str = "champion") -> str | None:
    """Why models:/name@alias cannot be served from the tracking store `uri`, in one line; None
    when it can. A sqlite file that does not exist is not created."""
    from pathlib import Path

    from transferlab.errors import UserError
    from transferlab.tracking.identity import masked
    from transferlab.tracking.store import check_reachable, sqlite_path

    shown, make = masked(uri), "make lm" if name == "transferlab-lm" else "make run"
    missing = f"no @{alias} of {name} in {shown}: run `{make}` first"
    if (path := sqlite_path(uri)) is not None and not Path(path).is_file():
        return missing
    try:
        check_reachable(uri)  # a server or database that does not answer: seconds, not MLflow's retries
    except UserError as error:
        return str(error)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if "not found" in error.message.lower() or error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return missing
        return masked(f"cannot read @{alias} of {name} from {uri}: {error.message.splitlines()[0]}")
    return None


if __name__ == "__main__":
    problem = champion_problem(*sys.argv[1:3])
    if problem:
        print(problem, file=sys.stderr)
    sys.exit(1 if problem else 0)
