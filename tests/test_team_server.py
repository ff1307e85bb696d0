"""A team's MLflow server as docs/collaboration.md sets it up: a real PostgreSQL (Debian's package,
installed with apt-get when missing) in a temp dir on a loopback port, `make server` on it, and two
clones of the tiny pipeline that log to it at the same time without losing a run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import pytest

from conftest import REPO, copy_tiny, free_port, sh, tool_env, wait_until_up

DB_USER = "postgres"  # the system user Debian's package creates; PostgreSQL refuses to run as root


def postgres_bin() -> Path | None:
    """The folder of initdb / pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        return Path(shutil.which("pg_ctl")).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def install_postgres() -> Path:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("PostgreSQL is not installed and cannot be installed here (needs root + apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "postgresql"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # an old package list: refresh it once and try again
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0 or postgres_bin() is None:
        pytest.skip(f"no PostgreSQL, and apt-get could not install it: {done.stderr[-300:]}")
    return postgres_bin()


@pytest.fixture(scope="module")
def postgres() -> dict[str, str]:
    """A throwaway PostgreSQL cluster in a temp dir, run by the `postgres` user when we are root, with
    a role named after us and its database `mlflow`, made as docs/collaboration.md makes them. It
    listens on 127.0.0.1 and a free port (trust, for the set-up) and on a socket in its temp dir
    (peer authentication, as Debian's is): yields the libpq variables that lead `postgresql:///mlflow`,
    the Makefile's default store, to its socket."""
    import getpass
    import pwd

    bindir = postgres_bin() or install_postgres()
    owner, as_db_user = None, []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(DB_USER)
        except KeyError:
            pytest.skip(f"PostgreSQL will not run as root and there is no {DB_USER!r} user")
        as_db_user = ["runuser", "-u", DB_USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="transferlab-pg-"))  # not under pytest's 0700 basetemp
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()

    def run(tool: str, *args: str) -> None:
        done = subprocess.run(
            [*as_db_user, str(bindir / tool), *args], cwd=root, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    try:
        run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off",
            "start",
        )
        try:
            admin = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
            run("createuser", *admin, getpass.getuser())
            run("createdb", *admin, "--owner", getpass.getuser(), "mlflow")
            yield {"PGHOST": str(root), "PGPORT": str(port)}
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """`make server` (the project's target, its default PostgreSQL store) on a free loopback port
    with a temp artifacts destination: yields its URL."""
    root = tmp_path_factory.mktemp("team-server")
    port, log = free_port(), root / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                "make",
                "-f",
                str(REPO / "Makefile"),
                "server",
                "STAMP=",
                f"SERVER_ARTIFACTS={root / 'artifacts'}",
                f"SERVER_PORT={port}",
                "SERVER_WORKERS=2",
            ],
            cwd=root,
            env=tool_env(**postgres),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", server, seconds=180, log=log)
        assert '--backend-store-uri "postgresql:///mlflow"' in log.read_text()
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, mlflow server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_make_server_listens_on_loopback_unless_told_otherwise():
    printed = sh("make", "-n", "server", "STAMP=", cwd=REPO).stdout.replace("\\\n", " ")
    command = next(line for line in printed.splitlines() if line.startswith("mlflow server"))
    assert "--host 127.0.0.1 " in command and '--backend-store-uri "postgresql:///mlflow"' in command, command


def test_make_server_on_a_port_in_use_fails_in_one_line():
    """Before: `make server` logged uvicorn's "address already in use" and exited 0."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sh("make", "server", "STAMP=", "TORCH=cpu", f"SERVER_PORT={port}", cwd=REPO, check=False)
    assert result.returncode != 0
    assert (
        f"port {port} on 127.0.0.1 is in use: stop what listens there, or set SERVER_PORT=..."
        in result.stderr
    )


@pytest.mark.slow
def test_two_clones_log_concurrently_to_one_postgres_backed_server(
    team_server, postgres, tiny_repo, tmp_path
):
    import mlflow
    import psycopg
    import yaml

    clones = [copy_tiny(tiny_repo, tmp_path / name) for name in ("alice", "bob")]
    logs = [tmp_path / f"{name}.log" for name in ("alice", "bob")]
    runs = []
    for clone, log in zip(clones, logs, strict=True):  # both start before either is waited for
        with log.open("w") as out:
            runs.append(
                subprocess.Popen(
                    ["transferlab", "run", "--", "--force"],
                    cwd=clone,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=tool_env(MLFLOW_TRACKING_URI=team_server),
                )
            )
    for run, log in zip(runs, logs, strict=True):
        assert run.wait(timeout=900) == 0, log.read_text()[-6000:]

    # One pipeline makes a parent run and one run per stage; two make twice that, all FINISHED.
    stages = list(yaml.safe_load((clones[0] / "dvc.yaml").read_text())["stages"])
    client = mlflow.MlflowClient(team_server)
    experiment = client.get_experiment_by_name("transferlab")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(found) == 2 * (1 + len(stages))
    assert {run.info.status for run in found} == {"FINISHED"}
    by_id, parents = {run.info.run_id: run for run in found}, set()
    for log in logs:  # each clone's stage runs (named in its log) are on the server under its parent
        named = dict(re.findall(r"MLflow run ([0-9a-f]{32}) \((\w+)\)", log.read_text()))
        assert sorted(named.values()) == sorted(stages), named
        assert set(named) <= set(by_id), "a run this clone logged is missing from the server"
        (parent,) = {by_id[run_id].data.tags.get("mlflow.parentRunId") for run_id in named}
        parents.add(parent)
        for run_id in named:  # the stage's log went through the server to its artifacts destination
            assert [a.path for a in client.list_artifacts(run_id, "logs")] == ["logs/stage.log"]
    assert len(parents) == 2 and {by_id[p].data.tags["transferlab.stage"] for p in parents} == {"pipeline"}
    versions = client.search_model_versions("name = 'transferlab-classifier-tiny'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {
        r.info.run_id for r in found if r.data.tags["transferlab.stage"] == "evaluate"
    }
    # ... and they are rows of the PostgreSQL database, read with the pinned driver.
    database = psycopg.connect("postgresql:///mlflow", host=postgres["PGHOST"], port=postgres["PGPORT"])
    with database, database.cursor() as cursor:
        cursor.execute("select status, count(*) from runs group by status")
        assert dict(cursor.fetchall()) == {"FINISHED": len(found)}


def at_the_same_moment(calls) -> list[Exception]:
    """Each call in a thread of its own, all released at once: the errors they raised."""
    import threading

    start, errors = threading.Barrier(len(calls)), []

    def run(call) -> None:
        start.wait()
        try:
            call()
        except Exception as error:  # noqa: BLE001 - returned to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.slow
def test_runs_that_log_the_same_new_rows_at_the_same_moment_all_succeed(team_server):
    """MLflow's store looks a dataset (or a model alias) up, then inserts it: teammates whose runs log
    the same data, or crown the first champion, at the same moment collide on its unique key. Every
    run still ends up linked to the one dataset row, and the alias is set."""
    import mlflow
    import pandas as pd

    from transferlab.tracking.runs import StageRun
    from transferlab.tracking.store import retried_on_collision

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(team_server)
    try:
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("simultaneous-rows")
        frame = pd.DataFrame({"text": ["a b", "c d"], "label": [0, 1]})
        for digest in ("race0", "race1", "race2", "race3"):  # each a new row that 6 runs race to insert
            runs = [
                StageRun(experiment_id=experiment_id, run_id=client.create_run(experiment_id).info.run_id)
                for _ in range(6)
            ]
            errors = at_the_same_moment(
                [partial(run.log_dataset, frame, "train", digest, "train") for run in runs]
            )
            assert not errors, errors[0]
            for run in runs:
                (entry,) = client.get_run(run.run_id).inputs.dataset_inputs
                assert (entry.dataset.name, entry.dataset.digest) == ("train", digest)
        client.create_registered_model("race")
        version = client.create_model_version("race", f"runs:/{runs[0].run_id}/model", runs[0].run_id)
        for alias in ("a0", "a1", "a2", "a3"):
            crown = partial(client.set_registered_model_alias, "race", alias, version.version)
            errors = at_the_same_moment([partial(retried_on_collision, crown) for _ in range(6)])
            assert not errors, errors[0]
            assert client.get_model_version_by_alias("race", alias).version == version.version
    finally:
        mlflow.set_tracking_uri(previous)
