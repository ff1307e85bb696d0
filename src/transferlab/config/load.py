"""Read params.yaml through the typed schema: the only way stages get their config."""

from __future__ import annotations

from pathlib import Path

from transferlab.config.checks import check, not_a_choice
from transferlab.errors import UserError


def load_params(path: str | Path = "params.yaml"):
    """Return params.yaml merged onto the schema, type-checked and range-checked."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: write it with `transferlab compose [overrides]`")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # malformed YAML
        raise UserError(f"{path} is not valid YAML: {err}") from None
    return validated(raw, str(path))


def validated(raw, source: str):
    """`raw` (a mapping or DictConfig, without Hydra's own node) merged onto the schema, read-only,
    type-checked and range-checked; errors name `source`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from transferlab.config.schema import Config

    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), raw)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"{source}: {not_a_choice(err) or f'{key}: {str(err).splitlines()[0]}'}") from None
    OmegaConf.set_readonly(cfg, True)
    check(cfg)
    return cfg


def job_config(raw):
    """The typed, checked pipeline config of a Hydra job's config (its `hydra` node dropped)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(raw, resolve=False)
    tree.pop("hydra", None)
    return validated(tree, "config")
