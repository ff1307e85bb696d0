"""Sweeps for real: `python -m transferlab -m ...` (basic, joblib, submitit_local, Optuna), all
with experiment=tiny, checked in the MLflow store and the Optuna study (the DVC queue:
test_dvc_queue.py). The first tests are quick checks of the pieces."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    REPO,
    children,
    copy_project,
    make_config,
    optuna_search,
    runs,
    sh,
    stage_of,
    store,
    study,
    sweeps,
    tool_env,
)

APP = (sys.executable, "-m", "transferlab")


# --- the pieces --------------------------------------------------------------------------------


def test_stage_cache_keys_follow_the_params_each_stage_depends_on(monkeypatch):
    from transferlab.pipeline import WORKSPACE_ENV
    from transferlab.stage_cache import key

    monkeypatch.setenv(WORKSPACE_ENV, str(REPO))
    base = make_config("experiment=tiny")
    other_lr = make_config("experiment=tiny", "finetune.backbone_lr=0.5")
    other_steps = make_config("experiment=tiny", "train.steps=7")
    assert key(base, "prepare") == key(other_lr, "prepare") == key(other_steps, "prepare")
    assert key(base, "train") == key(other_lr, "train") != key(other_steps, "train")
    assert key(base, "finetune") != key(other_lr, "finetune")
    assert key(base, "finetune") == key(make_config("experiment=tiny"), "finetune")
    # prepare lists `task` in dvc.yaml (it refuses data the task cannot use): a key of its own per task
    lm = make_config("experiment=tiny", "task=causal_lm", "model=scratch_gpt")
    assert (lm.seed, lm.data) == (base.seed, base.data) and key(base, "prepare") != key(lm, "prepare")


def test_code_deps_are_the_code_of_the_stage_and_its_upstream(monkeypatch):
    from transferlab.pipeline import WORKSPACE_ENV, code_deps

    monkeypatch.setenv(WORKSPACE_ENV, str(REPO))
    deps = code_deps("finetune")
    assert "src/transferlab/tasks/classification/finetune.py" in deps
    assert "src/transferlab/stages/prepare.py" in deps
    assert "src/transferlab/tasks/classification/evaluate.py" not in deps
    assert not [d for d in deps if d.startswith(("data/prepared", "models/"))], "produced files are not code"
    assert "data/raw" in deps, "the user's data folder is an input of every stage: prepare reads it"


def test_a_dvc_queue_workspace_logs_to_the_repository_store(monkeypatch):
    from transferlab.pipeline import WORKSPACE_ENV, project_root
    from transferlab.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(WORKSPACE_ENV, "/srv/project/.dvc/tmp/exps/tmpa1b2c3")
    assert project_root() == Path("/srv/project")
    assert tracking_uri(make_config()) == "sqlite:////srv/project/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(make_config()) == "http://127.0.0.1:5000"


def test_objective_and_direction_must_agree():
    from transferlab.errors import UserError

    make_config("sweep.objective=best_validation_loss", "sweep.direction=minimize")
    with pytest.raises(UserError, match="losses are minimized"):
        make_config("sweep.objective=best_validation_loss")
    with pytest.raises(UserError, match="sweep.objective='test_accuracy' is not one of"):
        make_config("sweep.objective=test_accuracy", "sweep.direction=maximize")


def test_a_sweep_whose_record_cannot_be_written_is_still_closed(workdir, caplog):
    """A sweep parent left RUNNING looks alive for ever: the record of the best job fails here for
    real (a file stands where the run's artifact folder must be), and the run is closed FAILED."""
    import mlflow

    from transferlab import sweep
    from transferlab.tracking import open_run

    cfg = make_config(f"tracking.uri=sqlite:///{workdir}/mlflow.db", "tracking.experiment=sweeps")
    run = open_run(cfg, "sweep")
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    artifacts = Path(client.get_run(run.run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts)
    artifacts.write_text("in the way")
    sweep._open_sweep.update(run=run, cfg=cfg, sweep_dir=workdir, hydra_yaml="x: 1\n")
    sweep.finish_sweep(failed=False)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert f"could not record the best job on MLflow run {run.run_id}" in caplog.text


def test_a_resumed_study_runs_only_the_missing_trials(tmp_path):
    import optuna
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from transferlab.optuna_study import trials_to_run

    storage = f"sqlite:///{tmp_path}/optuna.db"
    root = OmegaConf.create({"hydra": {"sweeper": {"study_name": "s", "storage": storage}}})
    assert trials_to_run(5, _root_=root) == 5  # no study yet
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.1, 0.2):
        trial = study.ask()
        study.tell(trial, value)
    study.ask()  # left RUNNING, as by a killed sweep
    assert trials_to_run(5, _root_=root) == 3
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert trials_to_run(2, _root_=root) == 0


def app(*args: str, cwd=REPO, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m transferlab ARGS`, the Hydra app, as a user runs it."""
    return subprocess.run([*APP, *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, check=check)


def test_the_app_outside_a_project_says_where_to_run_it(tmp_path):
    result = app("-m", "finetune.epochs=1,2", cwd=tmp_path)
    assert result.returncode != 0
    assert "conf/config.yaml not found: run it from the project root" in result.stderr


def test_a_bad_value_ends_a_single_run_in_one_line(tmp_path):
    result = app("finetune.epochs=0", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "python -m transferlab: error: invalid config" in result.stderr
    assert "finetune.epochs=0 must be > 0" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("override", ["data.path=~/x.csv", "~seed"])
def test_an_override_that_does_not_parse_ends_the_app_in_one_line(tmp_path, override):
    """Before: Hydra's lexer message over four lines without a word on quoting; `~seed` ran."""
    result = app("-m", "experiment=tiny", override, f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("python -m transferlab: error: ") and result.stderr.count("\n") == 1
    assert repr(override) in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_bad_value_ends_a_sweep_in_one_line(repo: Path):
    """A job's user error ends a basic sweep as it ends a single run: one line, exit code 2."""
    result = app("-m", "experiment=tiny", "finetune.batch_size=-4,-8", cwd=repo)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "python -m transferlab: error: invalid config: finetune.batch_size=-4 must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
    [sweep] = sweeps(repo, "finetune.batch_size=-4,-8")
    assert sweep.info.status == "FAILED"


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The app's error line, after asserting it is the only thing on stderr after Hydra's log."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    *_, line = result.stderr.splitlines()
    assert line.startswith("python -m transferlab: error: ")
    return line


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ("-m", "experiment=tiny", "finetune.bogus=1,2"),
            "Could not override 'finetune.bogus' (Key 'bogus' not in",
        ),
        (
            ("experiment=tiny", "finetune.epochs=abc"),
            "Value 'abc' of type 'str' could not be converted to Integer",
        ),
    ],
)
def test_a_config_hydra_cannot_compose_ends_the_app_in_one_line(repo: Path, arguments, message):
    """Before: Hydra's 7-line report and exit code 1, where transferlab compose says it in one line."""
    result = app(*arguments, cwd=repo)
    line = one_error_line(result)
    assert line.startswith("python -m transferlab: error: cannot compose config: ") and message in line
    assert "HYDRA_FULL_ERROR" not in result.stderr  # Hydra's own report
    if "-m" in arguments:
        [sweep] = sweeps(repo, "finetune.bogus=1,2")
        assert sweep.info.status == "FAILED"


def test_an_optuna_storage_that_cannot_be_opened_ends_the_sweep_in_one_line(repo: Path):
    """Before: the sweeper's traceback (485 lines) and exit code 1; `transferlab tune` said it in one."""
    storage = "postgresql+psycopg://127.0.0.1:5999/optuna"  # no server there
    result = app(*OPTUNA[3:], f"hydra.sweeper.storage={storage}", cwd=repo)
    line = one_error_line(result)
    assert f"cannot open Optuna storage {storage}: " in line and "Connection refused" in line
    assert result.stderr.count("\n") == 1


def test_slurm_jobs_no_controller_takes_end_the_sweep_in_one_line(repo: Path, tmp_path: Path):
    """A Slurm config whose controller does not answer: before, submitit's 60-line traceback, exit 1."""
    from test_slurm import install_slurm

    install_slurm()  # whichever test file runs first (skipping only where it cannot be installed)
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=5998\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=localhost Default=YES\n"
    )
    result = subprocess.run(
        [
            *APP,
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.gpus_per_node=null",
            "experiment=tiny",
            "finetune.epochs=1,2",
        ],
        cwd=repo,
        env=tool_env(SLURM_CONF=str(conf)),
        capture_output=True,
        text=True,
    )
    line = one_error_line(result)
    assert "the Slurm launcher could not submit the jobs: sbatch: " in line
    assert "Unable to contact slurm controller" in line
    [sweep] = sweeps(repo, "hydra/launcher=slurm")
    assert sweep.info.status == "FAILED"


def test_cluster_and_optuna_configs_compose():
    """The Slurm launcher config (run for real in test_slurm.py) and the Optuna search space compose."""
    slurm = app("hydra/launcher=slurm", "--cfg", "hydra", check=True).stdout
    assert "SlurmLauncher" in slurm and "gpus_per_node: 1" in slurm
    # unresolved: n_trials would consult the study in optuna.db
    optuna = app("hparams_search=finetune_optuna", "--cfg", "hydra", check=True).stdout
    assert "OptunaSweeper" in optuna and "finetune.backbone_lr: tag(log, interval(1e-5, 3e-4))" in optuna


# --- real sweeps ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("sweeps") / "project")


@pytest.mark.slow
def test_grid_sweep_runs_four_jobs_under_one_parent_and_a_repeat_reuses_every_stage(repo: Path):
    grid = ("experiment=tiny", "finetune.backbone_lr=1e-3,2e-3", "finetune.head_lr=1e-3,2e-3")
    sh(*APP, "-m", *grid, cwd=repo)

    [sweep] = sweeps(repo, "finetune.backbone_lr=1e-3,2e-3")
    assert sweep.info.status == "FINISHED"
    jobs = children(repo, sweep)
    assert [job.info.status for job in jobs] == ["FINISHED"] * 4
    assert len({job.data.tags["sweep.overrides"] for job in jobs}) == 4
    stages = [stage_of(run) for job in jobs for run in children(repo, job)]
    # Data prepared once and the language model trained once for the whole sweep; one fine-tune a job.
    assert sorted(stages) == ["finetune"] * 4 + ["prepare", "train"]
    [prepare] = runs(repo, "tags.`transferlab.stage` = 'prepare'")
    assert all(
        job.data.tags.get("lineage.prepare_run_id") == prepare.info.run_id
        for job in jobs
        if "prepare" not in [stage_of(r) for r in children(repo, job)]
    )
    assert len([p for p in (repo / ".cache/stages/prepare").iterdir() if p.is_dir()]) == 1

    objective = "best_validation_accuracy"
    assert sweep.data.metrics[objective] == max(job.data.metrics[objective] for job in jobs)
    assert sweep.data.tags["sweep.best_overrides"] in {job.data.tags["sweep.overrides"] for job in jobs}
    assert sweep.data.metrics["jobs"] == 4 and sweep.data.metrics["jobs_failed"] == 0
    client, _ = store(repo)
    assert {"multirun.yaml", "config.yaml"} <= {a.path for a in client.list_artifacts(sweep.info.run_id)}
    for job in jobs:  # each job's Hydra folder links what it used
        folder = Path(job.data.tags["hydra.output_dir"])
        assert (folder / "metrics/finetune.json").is_file()
        assert (folder / "models/finetuned/model.safetensors").is_file()
        assert (
            json.loads((folder / "metrics/finetune.json").read_text())[objective]
            == job.data.metrics[objective]
        )

    stage_runs_before = len(runs(repo, "tags.`transferlab.stage` = 'finetune'"))
    sh(*APP, "-m", *grid, cwd=repo)
    again = sweeps(repo, "finetune.backbone_lr=1e-3,2e-3")[-1]
    assert again.info.run_id != sweep.info.run_id and again.info.status == "FINISHED"
    repeat_jobs = children(repo, again)
    assert len(repeat_jobs) == 4 and not [run for job in repeat_jobs for run in children(repo, job)]
    assert len(runs(repo, "tags.`transferlab.stage` = 'finetune'")) == stage_runs_before
    assert all(
        job.data.tags["stages.ran"].startswith("none") and "lineage.finetune_run_id" in job.data.tags
        for job in repeat_jobs
    )
    assert again.data.metrics[objective] == sweep.data.metrics[objective]


@pytest.mark.slow
def test_four_parallel_joblib_jobs_share_one_sqlite_store_without_losing_a_run(repo: Path):
    """Four processes log to one sqlite MLflow store at once (params, per-step metrics, system
    metrics, artifacts): every job and stage run lands FINISHED, once, and sqlite never reports
    "database is locked" (MLflow sets busy_timeout=20 s on each SQLite session; new stores are
    created under a file lock by transferlab.tracking)."""
    values = "finetune.backbone_lr=5e-4,6e-4,7e-4,8e-4"

    def stage_runs_in_store(stage: str) -> int:  # no store yet: the sweep creates it (4 processes)
        exists = (repo / "mlflow.db").is_file()
        return len(runs(repo, f"tags.`transferlab.stage` = '{stage}'")) if exists else 0

    before = {stage: stage_runs_in_store(stage) for stage in ("prepare", "train")}
    result = sh(
        *APP, "-m", "experiment=tiny", values, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", cwd=repo
    )
    assert "database is locked" not in result.stdout + result.stderr
    [sweep] = sweeps(repo, values)
    assert "joblib" in sweep.data.tags["sweep.launcher"] and sweep.info.status == "FINISHED"
    jobs = children(repo, sweep)
    assert sorted(job.data.tags["sweep.overrides"] for job in jobs) == [
        f"experiment=tiny finetune.backbone_lr={v}" for v in ("0.0005", "0.0006", "0.0007", "0.0008")
    ]
    stage_runs = [run for job in jobs for run in children(repo, job)]
    assert all(run.info.status == "FINISHED" for run in jobs + stage_runs)
    stages = [stage_of(run) for run in stage_runs]
    # One fresh fine-tune a job; data and the language model at most once for all four (the stage
    # cache makes the other jobs wait for the first and reuse its outputs).
    assert all([stage_of(run) for run in children(repo, job)].count("finetune") == 1 for job in jobs)
    for stage in ("prepare", "train"):
        assert stages.count(stage) == stage_runs_in_store(stage) - before[stage] <= 1
    assert sweep.data.metrics["jobs"] == 4 and sweep.data.metrics["jobs_failed"] == 0


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_jobs_as_processes(repo: Path):
    values = "finetune.backbone_lr=9e-4,1.1e-3"
    sh(*APP, "-m", "experiment=tiny", values, "hydra/launcher=submitit_local", cwd=repo)
    [sweep] = sweeps(repo, values)
    assert "submitit" in sweep.data.tags["sweep.launcher"] and sweep.info.status == "FINISHED"
    assert [job.info.status for job in children(repo, sweep)] == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_a_sweep_job_reads_a_relative_data_path_and_registers_its_model(repo: Path):
    """Its stages run in their cache entries: data.path is read from the workspace (before: "does
    not exist"), and sweep.evaluate registers the model the entry links (before: MLflow refused the
    link, "resolved path is outside the artifact directory")."""
    table = repo / "data/raw/sweep_topics.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{label} text number {i},{label}" for label in ("alpha", "beta", "gamma") for i in range(8)]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    data = ("data=files", "data.path=data/raw/sweep_topics.csv")
    sh(*APP, "-m", "experiment=tiny", *data, "sweep.evaluate=true", "finetune.head_lr=1.3e-3", cwd=repo)
    [sweep] = sweeps(repo, "data.path=data/raw/sweep_topics.csv")
    [job] = children(repo, sweep)
    evaluate = [run for run in children(repo, job) if stage_of(run) == "evaluate"]
    assert sweep.info.status == "FINISHED" and len(evaluate) == 1
    client, _ = store(repo)
    [version] = client.search_model_versions(f"run_id = '{evaluate[0].info.run_id}'")
    assert version.name == "transferlab-classifier-tiny"


@pytest.mark.slow
def test_a_causal_lm_sweep_selects_on_validation_loss(repo: Path):
    values = "finetune.backbone_lr=1e-3,3e-3"
    sh(*APP, "-m", "experiment=lm_tiny", values, cwd=repo)
    [sweep] = sweeps(repo, "experiment=lm_tiny")
    jobs = children(repo, sweep)
    assert sweep.info.status == "FINISHED" and len(jobs) == 2
    assert sweep.data.tags["sweep.direction"] == "minimize"
    losses = [job.data.metrics["best_validation_loss"] for job in jobs]
    assert sweep.data.metrics["best_validation_loss"] == min(losses)


def completed(repo: Path, name: str) -> int:
    """COMPLETE trials of a study, read straight from optuna.db: optuna.load_study sets up its
    storage on every call (seconds on a busy 2-core machine), long enough to miss trials."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(repo / "optuna.db", timeout=30)) as db:
        try:
            [(count,)] = db.execute(
                "SELECT COUNT(*) FROM trials JOIN studies USING (study_id)"
                " WHERE studies.study_name = ? AND trials.state = 'COMPLETE'",
                (name,),
            )
        except sqlite3.OperationalError as err:  # the study's tables are not created yet
            if "no such table" not in str(err):
                raise
            return 0
    return count


@pytest.mark.slow
def test_an_interrupted_optuna_study_resumes_to_its_target(repo: Path):
    from optuna.trial import TrialState

    command = [
        *APP,
        "-m",
        "hparams_search=finetune_optuna",
        "experiment=tiny",
        "sweep.trials=5",
        "hydra.sweeper.study_name=resume",
    ]
    log = repo / "interrupted-sweep.log"  # shown when an assertion about the interrupt fails
    with log.open("w") as output:
        sweep = subprocess.Popen(
            command, cwd=repo, env=tool_env(), stdout=output, stderr=output, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while completed(repo, "resume") < 3 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sweep.poll() is None, f"the sweep ended before the interrupt: {completed(repo, 'resume')} trials"
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C
    assert sweep.wait(timeout=120) != 0
    done_before = completed(repo, "resume")
    assert 3 <= done_before < 5

    sh(*command, cwd=repo)
    trials = study(repo, "resume").trials
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 5
    assert not [t for t in trials if t.state == TrialState.RUNNING], "the interrupted trial stayed RUNNING"
    interrupted, resumed = sweeps(repo, "hydra.sweeper.study_name=resume")
    assert interrupted.info.status == "FAILED", log.read_text()[-3000:]
    assert resumed.info.status == "FINISHED"
    assert len(children(repo, resumed)) == 5 - done_before
    client, _ = store(repo)
    assert "optimization_results.yaml" in {a.path for a in client.list_artifacts(resumed.info.run_id)}
    assert resumed.data.metrics["best_validation_accuracy"] == study(repo, "resume").best_value


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_as_failed_and_the_study_goes_on(repo: Path):
    from optuna.trial import TrialState

    optuna_search(
        repo,
        "diverging",
        "grid",
        {"finetune.backbone_lr": "choice(1e-3, 1e30)"},
        direction="maximize",
        n_trials=2,
        max_failure_rate=1.0,
    )
    result = sh(*APP, "-m", "hparams_search=diverging", "experiment=tiny", cwd=repo)
    # The guard stops at the first non-finite loss: the training loss of a logged step.
    assert re.search(
        r"finetune: the (training|validation) loss is (nan|inf) at step \d+: the run diverged",
        result.stdout + result.stderr,
    )
    states = {t.params["finetune.backbone_lr"]: t.state for t in study(repo, "diverging").trials}
    assert states == {1e30: TrialState.FAIL, 1e-3: TrialState.COMPLETE}
    [sweep] = sweeps(repo, "hparams_search=diverging")
    assert sweep.info.status == "FINISHED" and sweep.data.metrics["jobs_failed"] == 1
    assert sorted(job.info.status for job in children(repo, sweep)) == ["FAILED", "FINISHED"]
    assert "finetune.backbone_lr=0.001" in sweep.data.tags["sweep.best_overrides"]


OPTUNA = (*APP, "-m", "hparams_search=finetune_optuna", "experiment=tiny")
TUNE = ("transferlab", "tune", "-j", "1", "experiment=tiny")


def distributions(repo: Path, name: str) -> set:
    """(name, distribution) pairs the study's trials recorded: one per parameter when all agree."""
    return {(k, repr(v)) for trial in study(repo, name).trials for k, v in trial.distributions.items()}


@pytest.mark.slow
def test_tune_grows_a_hydra_sweeps_study_and_a_resumed_sweep_draws_new_points(repo: Path):
    """Both tools ask Optuna for the sweeper's distributions, and seed their samplers with the seed +
    the trials already in the study: a resumed Hydra sweep no longer repeats trial 0's draw."""
    from optuna.trial import TrialState

    name = "hydra.sweeper.study_name=grown"
    sh(*OPTUNA, name, "sweep.trials=2", cwd=repo)
    result = sh(*TUNE, name, "sweep.trials=3", cwd=repo)
    assert "Cannot set different distribution" not in result.stdout + result.stderr
    sh(*OPTUNA, name, "sweep.trials=4", cwd=repo)
    trials = study(repo, "grown").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert "worker" in trials[2].user_attrs  # tune's
    assert len(distributions(repo, "grown")) == 4  # one distribution per parameter
    draws = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(draws)) == 4, draws


@pytest.mark.slow
def test_a_hydra_sweep_grows_a_study_tune_began(repo: Path):
    from optuna.trial import TrialState

    name = "hydra.sweeper.study_name=begun"
    sh(*TUNE, name, "sweep.trials=1", cwd=repo)
    sh(*OPTUNA, name, "sweep.trials=2", cwd=repo)
    trials = study(repo, "begun").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert len(distributions(repo, "begun")) == 4 and trials[0].params != trials[1].params


@pytest.mark.slow
def test_rerunning_a_finished_optuna_sweep_has_nothing_to_do(repo: Path):
    command = (*OPTUNA, "hydra.sweeper.study_name=done", "sweep.trials=1")
    sh(*command, cwd=repo)
    again = app(*command[3:], cwd=repo)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study done: sweep.trials reached, nothing to run" in again.stdout + again.stderr
    assert len(study(repo, "done").trials) == 1
    [sweep] = sweeps(repo, "hydra.sweeper.study_name=done")  # none for the rerun, as tune
    assert sweep.info.status == "FINISHED"


@pytest.mark.slow
def test_an_optuna_sweep_whose_every_trial_fails_ends_in_one_line(repo: Path, tmp_path: Path):
    from optuna.trial import TrialState

    (tmp_path / "empty.csv").write_text("")
    result = app(
        *OPTUNA[3:],
        "hydra.sweeper.study_name=empty",
        "sweep.trials=2",
        "data=files",
        f"data.path={tmp_path}/empty.csv",
        cwd=repo,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "python -m transferlab: error: study empty: no trial completed" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "is empty: it needs a header and rows" in result.stdout  # each FAIL trial's, Hydra's log
    assert [t.state for t in study(repo, "empty").trials] == [TrialState.FAIL] * 2
    [sweep] = sweeps(repo, "hydra.sweeper.study_name=empty")
    assert sweep.info.status == "FAILED"


@pytest.mark.slow
def test_a_study_refuses_the_trials_of_another_config(repo: Path):
    """Before: every config shared the study finetune_lr; a search over another config found the
    first one's trials, ran nothing, printed their best value and exited 0."""
    name = "hydra.sweeper.study_name=one_config"
    sh(*OPTUNA, name, "sweep.trials=1", cwd=repo)
    other = ("model.max_length=32", name, "sweep.trials=1")
    for result in (app(*OPTUNA[3:], *other, cwd=repo), sh(*TUNE, *other, cwd=repo, check=False)):
        assert result.returncode == 2, result.stderr[-3000:]
        assert "study one_config was made for another config" in result.stderr.splitlines()[-1]
        assert "hydra.sweeper.study_name=" in result.stderr.splitlines()[-1]
    assert len(study(repo, "one_config").trials) == 1
    again = sh(*TUNE, name, "sweep.trials=1", cwd=repo)  # the same config: tune agrees, nothing to run
    assert "1 of 1 trials finished" in again.stdout + again.stderr
