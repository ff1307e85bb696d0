"""Which config an Optuna study holds: both the Hydra Optuna sweeper and `transferlab tune` record
its digest on a study they make, and refuse a study made for another config. Before, every
config shared the study finetune_lr: a default-config search found the tiny one's trials, ran
nothing and reported their best value."""

from __future__ import annotations

from transferlab.errors import UserError

CONFIG_ATTR = "transferlab.config"  # the study's user attribute: the digest of its config


def config_digest(cfg, searched) -> str:
    """Digest of the config the study's trials run with: the params the stages up to finetune read
    (dvc.yaml; not sweep.*, tracking, checkpoint), minus the `searched` keys."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    from transferlab.pipeline import stage_params
    from transferlab.tracking.identity import flatten

    tree = OmegaConf.to_container(cfg, resolve=True)
    keys = stage_params("finetune") or [k for k in tree if k not in ("sweep", "tracking", "checkpoint")]
    leaves: dict = {}
    for key in keys:
        node = tree
        for part in key.split("."):
            node = node[part]
        leaves.update(flatten(node, key + ".") if isinstance(node, dict) else {key: node})
    leaves = {
        name: value
        for name, value in leaves.items()
        if not any(name == key or name.startswith(key + ".") for key in searched)
    }
    return hashlib.sha256(json.dumps(leaves, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check(study, cfg, searched) -> None:
    """A study holds the trials of one config: a new one (or one made before this check) records
    this config's digest; another config is refused, not mixed in or taken for done."""
    digest = config_digest(cfg, searched)
    recorded = study.user_attrs.get(CONFIG_ATTR)
    if recorded is None:
        study.set_user_attr(CONFIG_ATTR, digest)
    elif recorded != digest:
        raise UserError(
            f"study {study.study_name} was made for another config (digest {recorded}, this one "
            f"{digest}): run it with the overrides it was made with, or give this config its own "
            "study with hydra.sweeper.study_name=NAME"
        )
