"""Shared fixtures: real Hydra composition, real DVC in throwaway git repos, real MLflow stores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# pytest-xdist runs one worker per core; with torch's default of one thread per core in every
# pipeline process the workers' threads fight over the cores (2 cores: 600 s for the suite against
# 528 s with one thread each). No test compares figures across thread counts.
os.environ.setdefault("OMP_NUM_THREADS", "1")
VENV_BIN = Path(sys.executable).parent
# SQL for a run's stage in an MLflow sqlite store: its tag (names say more: `finetune ·
# bert-2x32-scratch-64`); lineage finds runs by it. Use as `... from runs r where {STAGE} = 'finetune'`.
STAGE = "(select value from tags where run_uuid = r.run_uuid and key = 'transferlab.stage')"
# The files that take longest (measured on 2 cores), handed out first: pytest-xdist gives each
# worker one file at a time in collection order (`make test` turns off its reordering by test
# count), so a long file that starts last would keep one core busy while the other idles.
SLOWEST_FIRST = (
    "test_resume.py",
    "test_sweeps.py",
    "test_reruns.py",
    "test_causal_lm.py",
    "test_slurm.py",
    "test_distributed.py",
    "test_tuning.py",
    "test_team_server.py",
    "test_dvc_queue.py",
    "test_bad_input.py",
    "test_techniques.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def tool_env(**extra: str) -> dict[str, str]:
    """The environment the pipeline runs in: venv tools first, offline hubs, no MLflow override."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    env.update(extra)
    return env


def sh(*args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command as a user would; on an unexpected failure show what it printed."""
    result = subprocess.run(args, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def project_files() -> list[str]:
    """The project's files as a clone would have them (tracked plus new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p for p in listed.splitlines() if (REPO / p).is_file()]


def copy_project(dest: Path) -> Path:
    """A fresh git repository holding a copy of the project, committed."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    for outputs in ("data/prepared", "models", "metrics", "plots", "dvc.lock"):
        shutil.rmtree(dest / outputs, ignore_errors=True) if (dest / outputs).is_dir() else (
            dest / outputs
        ).unlink(missing_ok=True)
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "copy of the project", cwd=dest)
    return dest


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The project with params.yaml composed for experiment=tiny, after a real `dvc repro`; tests
    only read it (tiny_copy is for changes). Built once per test session: under pytest-xdist the
    first worker to need it builds it under a file lock and the others reuse it."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above every worker's own
    repo, built = shared / "tiny" / "project", shared / "tiny" / "built"
    with FileLock(str(shared / "tiny.lock")):
        if not built.exists():
            shutil.rmtree(repo.parent, ignore_errors=True)
            copy_project(repo)
            sh("transferlab", "compose", "experiment=tiny", cwd=repo)
            sh("git", "commit", "-q", "-am", "experiment=tiny", cwd=repo)
            sh("dvc", "repro", cwd=repo)
            built.touch()
    return repo


def copy_tiny(tiny_repo: Path, dest: Path) -> Path:
    """A private copy of the finished tiny repo, with its DVC cache, without DVC's lock and index
    files (another worker's dvc command may be writing them in tiny_repo meanwhile)."""

    def skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder).name == ".dvc" else []

    shutil.copytree(tiny_repo, dest, symlinks=True, ignore=skip_dvc_tmp)
    return dest


@pytest.fixture
def tiny_copy(tiny_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny repo (with its DVC cache) to change things in."""
    return copy_tiny(tiny_repo, tmp_path / "project")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty directory as the current one, with MLflow pointed at a store inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def make_config(*overrides: str):
    """Compose conf/ with overrides and load it the way stages do (typed, checked)."""
    from omegaconf import OmegaConf

    from transferlab.config.checks import check
    from transferlab.config.compose import compose
    from transferlab.config.schema import Config

    cfg = OmegaConf.merge(OmegaConf.structured(Config), compose(list(overrides), REPO / "conf"))
    check(cfg)
    return cfg


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_checkpoint(repo: Path, marker_glob: str, min_step: int, *processes: subprocess.Popen) -> None:
    """Return as soon as a complete checkpoint (its marker, `transferlab.json`) of at least
    `min_step` exists under `repo`; fail if one of `processes` ends first."""
    import glob
    import time

    while True:
        steps = [int(Path(m).parent.name.split("-")[1]) for m in glob.glob(str(repo / marker_glob))]
        if steps and max(steps) >= min_step:
            return
        ended = [process.args for process in processes if process.poll() is not None]
        assert not ended, f"{ended} ended before a checkpoint of step {min_step}"
        time.sleep(0.02)


def kill_when(command: list[str], repo: Path, marker_glob: str, min_step: int) -> None:
    """Start `command` in its own process group; SIGKILL the whole group as soon as a complete
    checkpoint (its marker) of at least `min_step` exists."""
    import signal

    process = subprocess.Popen(
        command,
        cwd=repo,
        env=tool_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_checkpoint(repo, marker_glob, min_step, process)
    finally:
        with_group = process.poll() is None
        if with_group:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert with_group


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 120, log: Path | None = None) -> None:
    """Poll `url` until it answers; fail with the server's output (its stdout pipe, or the file `log`
    it writes to) if it exits first."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()[-6000:] if log else process.stdout.read()}")
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


def serve_and_post(repo: Path, model_uri: str, *payloads: dict) -> list[list]:
    """`mlflow models serve` of a registered model on a free loopback port (as `make serve` does),
    a POST to /invocations per payload, then the server is stopped; returns each's predictions."""
    import json
    import time
    import urllib.request

    port = free_port()
    env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
    server = subprocess.Popen(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not come up in 180 s")
        answers = []
        for payload in payloads:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                answers.append(json.loads(response.read())["predictions"])
        return answers
    finally:
        server.terminate()
        server.wait(timeout=30)


def store(repo: Path):
    """The project's MLflow store (sqlite) and its experiment id."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    experiment = client.get_experiment_by_name("transferlab")
    return client, experiment.experiment_id


def runs(repo: Path, where: str = "") -> list:
    """The project's MLflow runs matching `where`, oldest first."""
    client, experiment_id = store(repo)
    found = client.search_runs([experiment_id], filter_string=where, max_results=5000)
    return sorted(found, key=lambda run: run.info.start_time)


def sweeps(repo: Path, argument: str) -> list:
    """The sweep runs (Hydra multirun or `transferlab tune`) whose command line had `argument`,
    oldest first."""
    return [
        run
        for run in runs(repo, "tags.`transferlab.stage` = 'sweep'")
        if argument in run.data.tags["sweep.arguments"].split()
    ]


def children(repo: Path, run) -> list:
    """The runs directly under `run`, oldest first."""
    return runs(repo, f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")


def stage_of(run) -> str:
    return run.data.tags.get("transferlab.stage")


def study(repo: Path, name: str):
    """An Optuna study in the project's optuna.db."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{repo}/optuna.db")


def optuna_search(repo: Path, name: str, sampler: str, params: dict[str, str], **sweeper) -> None:
    """conf/hparams_search/<name>.yaml in `repo`: an Optuna study `name` in optuna.db drawing
    `params` with `sampler`; `sweeper` adds settings (seed=... goes to the sampler)."""
    import yaml

    seed = sweeper.pop("seed", None)
    settings = {
        "study_name": name,
        "storage": "sqlite:///optuna.db",
        **sweeper,
        **({"sampler": {"seed": seed}} if seed is not None else {}),
        "params": params,
    }
    config = {
        "defaults": [{"override /hydra/sweeper": "optuna"}, {"override /hydra/sweeper/sampler": sampler}],
        "hydra": {"sweeper": settings},
    }
    (repo / f"conf/hparams_search/{name}.yaml").write_text(
        "# @package _global_\n" + yaml.safe_dump(config, sort_keys=False)
    )
