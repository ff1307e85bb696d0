"""The Optuna study `transferlab tune` works on, as conf/ describes it: composed with Hydra's node
(hydra.sweeper of hparams_search=...: study name, storage, search space, sampler), the pruner of
sweep.pruner, and which trials count as finished or abandoned."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from transferlab.errors import UserError


def finished(study) -> int:
    """The study's COMPLETE and PRUNED trials: what sweep.trials counts."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def compose(overrides: list[str]):
    """conf/ composed with `overrides`, Hydra's node kept: hydra.sweeper holds the study."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from transferlab.config.compose import one_line
    from transferlab.config.schema import register

    register()
    try:
        with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"cannot compose config: {one_line(err)}") from None


def open_study(raw, cfg, **settings):
    import optuna

    sweeper = raw.hydra.sweeper
    if "params" not in sweeper or not sweeper.storage:
        raise UserError(
            "transferlab tune needs an Optuna study with a storage: hparams_search=... "
            "(conf/hparams_search/) and hydra.sweeper.storage"
        )
    study = optuna.create_study(
        study_name=sweeper.study_name,
        storage=storage(sweeper.storage),
        direction=str(cfg.sweep.direction),
        load_if_exists=True,
        **settings,
    )
    if study.direction.name.lower() != cfg.sweep.direction:
        raise UserError(
            f"study {study.study_name} is {study.direction.name.lower()}d, not "
            f"sweep.direction={cfg.sweep.direction}: pick another hydra.sweeper.study_name"
        )
    return study


def storage(url: str):
    """A database URL (sqlite:///optuna.db, waiting up to 60 s for its lock; postgresql://...) or
    the path of a journal file (Optuna's JournalFileBackend, for file systems sqlite cannot lock)."""
    import optuna

    if "://" in url:
        from transferlab.tracking.identity import masked
        from transferlab.tracking.store import write_ahead_log

        settings = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        try:
            write_ahead_log(url)  # readers (other workers) do not wait for a committing writer
            return optuna.storages.RDBStorage(url, engine_kwargs=settings)
        except Exception as err:  # a missing folder, a bad URL, a database server that refuses
            raise UserError(f"cannot open Optuna storage {masked(url)}: {str(err).splitlines()[0]}") from None
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url))


def search_space(raw) -> tuple[dict, list[str]]:
    """hydra.sweeper.params as Optuna distributions, in the Hydra Optuna sweeper's grammar (Hydra's
    public override parser): choice(...) and range(...) are categorical, interval(...) a float (or
    int) range, log-scaled when tagged `log`; plain values are overrides every trial gets."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = {}, []
    given = [f"{key}={value}" for key, value in raw.hydra.sweeper.params.items()]
    for override in OverridesParser.create().parse_overrides(given):
        name, value = override.get_key_element(), override.value()
        if isinstance(value, ChoiceSweep):
            space[name] = CategoricalDistribution(list(value.list))
        elif isinstance(value, RangeSweep):
            space[name] = CategoricalDistribution(list(override.sweep_iterator()))
        elif isinstance(value, IntervalSweep):
            whole = all(isinstance(end, int) for end in (value.start, value.end))
            kind = IntDistribution if whole and "log" not in value.tags else FloatDistribution
            space[name] = kind(value.start, value.end, log="log" in value.tags)
        else:
            fixed.append(f"{name}={override.get_value_element_as_str()}")
    return space, fixed


def suggest(trial, name: str, distribution):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    method = trial.suggest_int if isinstance(distribution, IntDistribution) else trial.suggest_float
    return method(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def sampler(raw, offset: int):
    """hydra.sweeper.sampler with its seed moved by `offset`: workers do not draw the same values.
    TPE also counts running trials as bad ones (constant_liar), as Optuna advises for parallel workers."""
    from hydra.utils import instantiate

    node = raw.hydra.sweeper.sampler
    settings = {} if node.get("seed") is None else {"seed": node.seed + offset}
    if node._target_.endswith("TPESampler"):
        settings["constant_liar"] = True
    return instantiate(node, **settings)


def pruner(settings):
    import optuna

    try:
        if settings.kind == "median":
            return optuna.pruners.MedianPruner(settings.n_startup_trials, settings.n_warmup_steps)
        if settings.kind == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, settings.n_warmup_steps))
    except ValueError as err:
        raise UserError(f"sweep.pruner: {err}") from None
    return optuna.pruners.NopPruner()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_gone(trial) -> bool:
    """Whether a RUNNING trial was left by a dead worker of this machine (or by a process that never
    said which it was, a minute ago or more: the Hydra sweeper's). Another machine's are its own."""
    import datetime

    host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
    if not pid:
        started = trial.datetime_start or datetime.datetime.now()
        return (datetime.datetime.now() - started).total_seconds() > 60
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
