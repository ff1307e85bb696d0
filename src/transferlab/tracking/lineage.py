"""Which run made an output: the config fingerprint each stage run is tagged with, and the search
for the run that matches one."""

from __future__ import annotations

from transferlab.pipeline import stage_params

# Keys added to the config after runs were recorded, each with the value that does what those runs
# did: at that value a key is left out of the digest, so the recorded runs keep their fingerprints.
ADDED_LATER = {"finetune.hidden_dropout": None}


def fingerprint(cfg, stage: str) -> str:
    """A digest of the config that determines `stage`'s outputs (its params and its upstream ones).

    Runs that DVC later restores from its cache carry the same fingerprint, so a report can find
    the MLflow run that produced an output without re-running anything."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    for key, neutral in ADDED_LATER.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part, {})
        if leaf in node and node[leaf] == neutral:
            del node[leaf]
    keys = stage_params(stage) or [k for k in config if k != "tracking"]
    selected = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        selected[key] = node
    return hashlib.sha256(json.dumps(selected, sort_keys=True).encode()).hexdigest()[:16]


def latest_stage_run(stage: str, digest: str, experiment_id: str):
    """The newest finished run of `stage` with this fingerprint, or None."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        max_results=1,
        output_format="list",
        filter_string=(
            f"tags.`transferlab.stage` = '{stage}' and "
            f"tags.`transferlab.fingerprint` = '{digest}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None
