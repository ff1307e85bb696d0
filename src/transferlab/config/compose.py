"""Compose ``conf/`` with Hydra, as DVC does for ``dvc exp run -S``, and write params.yaml."""

from __future__ import annotations

from pathlib import Path

from transferlab.errors import UserError


def compose(overrides: list[str] = (), config_dir: str | Path = "conf", config_name: str = "config"):
    """Compose the config the way DVC's Hydra integration does; return a DictConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from transferlab.config.schema import Config, register

    config_dir = Path(config_dir).resolve()
    if not config_dir.is_dir():
        raise UserError(f"config directory {config_dir} not found")
    check_syntax(overrides)
    register()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        # Hydra lets `+key=value` append even to typed nodes; the schema does not.
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
        return cfg
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"cannot compose config: {one_line(err)}") from None


OVERRIDE_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def check_syntax(overrides) -> None:
    if problem := syntax_problem(overrides):
        raise UserError(problem)


def syntax_problem(overrides) -> str | None:
    """Parse each override alone, so a syntax error names the override and how to quote it
    (Hydra's own message may name neither, and an empty key is a crash deep in Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            (parsed,) = parser.parse_overrides([override])
        except HydraException:
            parsed = None
        if parsed is None or not parsed.key_or_group:
            return (
                f"cannot parse the override {override!r}: it must read key=value; quote a value "
                f"that holds a space or one of ~ ( ) [ ] {{ }} : = , as key='value' (in the shell: "
                f"\"key='value'\"; {OVERRIDE_GRAMMAR})"
            )
        if parsed.is_delete():
            return (
                f"the override {override!r} deletes {parsed.key_or_group}, but every key is read "
                f"by some stage: give it a value instead ({parsed.key_or_group}=...)"
            )
    return None


def one_line(err: Exception) -> str:
    """Hydra's message on one line: its first line, the alternatives of a missing option, and the
    precise reason it wraps (e.g. the failed conversion). Its hint to append with `+key=` is
    dropped: the schema refuses unknown keys either way."""
    from transferlab.config.checks import not_a_choice

    if choice := not_a_choice(err):
        return choice
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    message = lines[0].rstrip(".")
    if "Available options in" in str(err):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
        options = [
            line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))
        ]
        message += f" (options: {', '.join(options)})"
    if err.__cause__ is not None:
        message += f" ({str(err.__cause__).strip().splitlines()[0]})"
    return message


def to_yaml(cfg) -> str:
    """The exact text DVC writes to params.yaml for a composed config."""
    from omegaconf import OmegaConf

    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)
