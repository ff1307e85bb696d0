"""The Optuna study of hparams_search=..., shared by the Hydra Optuna sweeper and `transferlab tune`:
composed with Hydra's node (hydra.sweeper: study name, storage, search space, sampler), the pruner
of sweep.pruner, which trials count as finished or abandoned, and what a resumed sweep runs and
seeds its sampler with (the same rules for both tools)."""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab import study_config
from transferlab.errors import UserError

log = logging.getLogger(__name__)


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

    from transferlab.config.compose import check_syntax, one_line
    from transferlab.config.schema import register

    check_syntax(overrides)
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


def search_space(raw, arguments=()) -> tuple[dict, list[str]]:
    """hydra.sweeper.params (and sweep `arguments` of the command line, as the sweeper takes them)
    as the distributions the Hydra Optuna sweeper builds from them, with its own function: both
    tools must ask Optuna for the same distribution classes, or a study one made refuses the
    other's trials. Plain values are overrides every trial gets."""
    import warnings

    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    given = [f"{key}={value}" for key, value in (raw.hydra.sweeper.params or {}).items()] + list(arguments)
    with warnings.catch_warnings():  # optuna 5 calls the sweeper's distribution classes deprecated
        warnings.simplefilter("ignore", FutureWarning)
        space, fixed = create_params_from_overrides(given)
    return {k: v for k, v in space.items() if k not in fixed}, [f"{k}={v}" for k, v in fixed.items()]


def suggest(trial, name: str, distribution):
    """The sweeper's call (Trial.suggest_* would record optuna 5's own distribution classes)."""
    return trial._suggest(name, distribution)


def check_space(study, space: dict) -> None:
    """A study searched over other distributions for the same names (another search space, or a
    study `transferlab tune` began before it used the sweeper's classes) would fail every trial."""
    from optuna.distributions import check_distribution_compatibility

    for trial in study.get_trials(deepcopy=False):
        for name, recorded in trial.distributions.items():
            try:
                if name in space:
                    check_distribution_compatibility(recorded, space[name])
            except ValueError as err:
                raise UserError(
                    f"study {study.study_name} searched {name} as {recorded}, not as {space[name]} "
                    f"({err.args[0].rstrip('.')}): pick another hydra.sweeper.study_name"
                ) from None


def seed_offset(study) -> int:
    """How far a new command moves the sampler's seed (+ its worker index for `transferlab tune`):
    the trials already in the study, so a resumed or grown study draws new points."""
    return len(study.get_trials(deepcopy=False)) if study is not None else 0


def trials_to_run(target: int, *, _root_) -> int:
    """Resolver `sweep_trials` for the Hydra sweeper's `n_trials`: the trials the study still lacks
    to have `target` finished (COMPLETE or PRUNED) ones, so re-running an interrupted sweep resumes
    it. Trials the interrupted sweep left RUNNING are marked FAIL first."""
    import optuna

    sweeper = _root_.hydra.sweeper
    try:
        study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
    except KeyError:  # a new study
        return int(target)
    fail_unfinished(study)
    done = finished(study)
    left = max(0, int(target) - done)
    log.info("study %s: %d of %d trials finished, %d to run", study.study_name, done, target, left)
    return left


def fail_unfinished(study, abandoned=lambda trial: True) -> None:
    """Mark FAIL the study's RUNNING trials that `abandoned` says no process runs any more (all of
    them for the Hydra sweeper, which runs alone): an interrupted sweep or a killed worker left them."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if abandoned(trial):
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning(
                "study %s: trial %d was left unfinished by an interrupted sweep or a killed "
                "worker: marked FAIL",
                study.study_name,
                trial.number,
            )


def prepare_sweep(config) -> bool:
    """Before the Hydra Optuna sweeper is made from `config` (Hydra's, in on_multirun_start): its
    n_trials resolved (what the study lacks), the study made or checked against this config (as
    `transferlab tune` does), its sampler's seed moved by seed_offset as `transferlab
    tune` moves it, the study's search space checked. False when nothing is left to run (its sweep
    folder is made for the sweeper's optimization_results.yaml)."""
    from omegaconf import read_write

    from transferlab.config.load import job_config

    sweeper = config.hydra.sweeper
    cfg = job_config(config)
    study = open_study(config, cfg)  # made here if new, so it records its config as tune's do
    space = search_space(config, config.hydra.overrides.task)[0]
    study_config.check(study, cfg, space)
    check_space(study, space)
    left = int(sweeper.n_trials)  # resolves sweep_trials
    with read_write(sweeper):
        sweeper.n_trials = left
        if sweeper.sampler.get("seed") is not None:
            sweeper.sampler.seed = (int(sweeper.sampler.seed) + seed_offset(study)) % 2**32  # numpy: < 2**32
    if left == 0:
        log.info("study %s: sweep.trials reached, nothing to run", sweeper.study_name)
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
    return left > 0


def sampler(raw, offset: int):
    """hydra.sweeper.sampler with its seed moved by `offset`: workers do not draw the same values.
    TPE also counts running trials as bad ones (constant_liar), as Optuna advises for parallel workers."""
    from hydra.utils import instantiate

    node = raw.hydra.sweeper.sampler
    settings = {} if node.get("seed") is None else {"seed": (node.seed + offset) % 2**32}
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


def none_completed(name: str, storage: str) -> bool:
    """Whether the study has no COMPLETE trial (the Hydra sweeper then fails on its best trial)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=storage)
    return not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def quiet_deprecations() -> None:
    """hydra-optuna-sweeper 1.3's distributions (a study's too) and TPE options are deprecated in
    optuna 5, and Optuna calls constant_liar experimental: nothing to act on."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", r".*(Distribution|`\w+`) has been deprecated", FutureWarning)
    warnings.filterwarnings("ignore", r".*constant_liar", ExperimentalWarning)


def worker_gone(trial) -> bool:
    """Whether a RUNNING trial was left by a dead worker of this machine (or by a process that never
    said which it was, a minute ago or more: the Hydra sweeper's). Another machine's are its own."""
    import datetime

    from transferlab.tracking.processes import ended_here

    worker = trial.user_attrs.get("worker", "")
    if ":" not in worker:
        started = trial.datetime_start or datetime.datetime.now()
        return (datetime.datetime.now() - started).total_seconds() > 60
    return ended_here(worker)
