"""Model registry: `evaluate` logs the fine-tuned model as an MLflow model, registers a new
version, and moves the champion alias to it when it beats the holder on the same test split. The
classifier's model carries a copy of its folder; the language model's refers to its folder in DVC's
cache instead (`weights_in_dvc`, see tracking/weights.py), so its weights are stored once."""

from __future__ import annotations

import logging
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path

from transferlab.tracking.store import retried_on_collision

log = logging.getLogger(__name__)
SERVED_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "mlflow")


def pip_requirements(*extra: str) -> list[str]:
    """Exact pins of what the served model imports (MLflow's inference of them fails here)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in (*SERVED_PACKAGES, *extra)]


def publish(
    run_log,
    cfg,
    model_dir: Path,
    examples: list[str],
    score: float,
    test_digest: str,
    *,
    python_model=None,
    output_example=None,
    model_config: dict | None = None,
    params: dict | None = None,
    metric: str = "test_accuracy",
    higher_is_better: bool = True,
    description: str | None = None,
    weights_in_dvc: bool = False,
):
    """Log + register the model; return (version, whether it became the champion). The champion is
    the version with the best `metric` on the same test data (higher or lower is better). `params`
    (name -> default) are the request parameters the served model accepts; `description` becomes
    the version's (the model card with its test results). `weights_in_dvc`: log no copy of
    `model_dir`, only its DVC reference, as `model_config["weights"]` (the python_model loads it
    with tracking.weights.materialized)."""
    if run_log.run_id is None or not cfg.tracking.registered_model:
        return None, False
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    package = Path(__file__).resolve().parents[1]  # all of transferlab: the served model imports it
    sample = examples[:2]
    if python_model is None:  # the classifier: texts in, labels and scores out
        from transferlab.tasks.classification.serving import TextClassifier

        python_model = TextClassifier()
        output_example = pd.DataFrame({"label": ["x"] * len(sample), "score": [0.5] * len(sample)})
    signature = infer_signature(sample, output_example, params=params)
    # Resolved: a Hydra sweep's models/finetuned is a link into its stage cache, and MLflow refuses
    # to copy a folder whose real path is outside the one it was given.
    artifacts, requirements = {"model": str(Path(model_dir).resolve())}, pip_requirements()
    if model_config is None:  # the classifier: serving cuts and pools texts as evaluate did
        from transferlab.data.truncation import window_stride

        model = cfg.model
        model_config = {
            "max_length": model.max_length,
            "truncation": str(model.truncation),
            "window_stride": window_stride(model.max_length, model.window_stride),
            "max_windows": model.max_windows,
            "batch_size": cfg.evaluate.batch_size,  # texts per forward pass when serving
        }
    if weights_in_dvc:
        from transferlab.tracking.weights import reference

        artifacts, requirements = None, pip_requirements("dvc")
        model_config = {**model_config, "weights": reference(model_dir)}
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts=artifacts,
        code_paths=[str(package)],
        pip_requirements=requirements,
        signature=signature,
        input_example=sample,
        model_config=model_config,
    )
    name, alias = cfg.tracking.registered_model, cfg.tracking.champion_alias
    registered = mlflow.register_model(info.model_uri, name)
    client = mlflow.MlflowClient()
    if description:
        client.update_model_version(name, registered.version, description=description)
    holder = None
    with suppress(mlflow.exceptions.MlflowException):  # raised when there is no champion yet
        holder = client.get_model_version_by_alias(name, alias)
    wins, comparable = holder is None, True
    if holder is not None:
        previous = client.get_run(holder.run_id)
        # Scores on other test data do not compare: a smoke test on a few rows, or another data
        # set, never takes the alias by itself (a person moves it, knowing why).
        comparable = previous.data.tags.get("test.digest") == test_digest
        held = previous.data.metrics.get(metric)
        wins = comparable and (held is None or (score > held if higher_is_better else score < held))
    if wins:
        # the first champion of two evaluations at the same moment: both insert the alias row
        retried_on_collision(lambda: client.set_registered_model_alias(name, alias, registered.version))
        outcome = f" as @{alias}"
    elif comparable:
        outcome = f" (@{alias} stays on version {holder.version})"
    else:
        outcome = f" (@{alias} stays on version {holder.version}, scored on other test data: move it by hand)"
    log.info("registered %s version %s%s", name, registered.version, outcome)
    run_log.set_tags(
        {"registry.model": name, "registry.version": registered.version, "registry.champion": wins}
    )
    return registered.version, wins
