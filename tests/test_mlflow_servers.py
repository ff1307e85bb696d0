"""MLflow as people use it over the network: a real tracking server on a loopback port that a stage
logs to over HTTP, its REST API, and the web UI rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, sh, tool_env, wait_until_up


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a sqlite store, as the README documents it."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = tool_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(
        [
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'store.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def logged_over_http(tracking_server, tmp_path_factory) -> str:
    """A real `prepare` stage run that logs to the server through MLFLOW_TRACKING_URI."""
    work = tmp_path_factory.mktemp("work")
    sh(
        "transferlab",
        "compose",
        "--config-dir",
        str(REPO / "conf"),
        "data.max_per_label=4",
        "tracking.experiment=over-http",
        cwd=work,
    )
    sh("transferlab", "prepare", cwd=work, MLFLOW_TRACKING_URI=tracking_server)
    return tracking_server


def test_a_stage_logs_to_a_tracking_server_and_the_rest_api_returns_it(logged_over_http):
    def post(path: str, payload: dict) -> dict:
        request = urllib.request.Request(
            f"{logged_over_http}/api/2.0/mlflow/{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    with urllib.request.urlopen(
        f"{logged_over_http}/api/2.0/mlflow/experiments/get-by-name?experiment_name=over-http", timeout=10
    ) as response:
        experiment = json.loads(response.read())["experiment"]
    runs = post("runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 1
    tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
    assert tags["transferlab.stage"] == "prepare" and runs[0]["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in runs[0]["data"]["metrics"]}
    assert metrics["train_examples"] + metrics["validation_examples"] + metrics["test_examples"] == 20


def test_an_unreachable_server_fails_the_stage_in_seconds(tmp_path):
    sh("transferlab", "compose", "--config-dir", str(REPO / "conf"), cwd=tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = sh("transferlab", "prepare", cwd=tmp_path, check=False, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 2 and f"{uri} is unreachable" in result.stderr
    assert time.monotonic() - started < 20
    assert not (tmp_path / "data").exists()


def chromium() -> str:
    """Debian's Chromium, installed when absent (CI runs as root with the Debian mirror reachable)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root + apt-get)")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600, **quiet)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        timeout=900,
        **quiet,
    )
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip("chromium could not be installed from Debian's packages")
    return shutil.which("chromium")


def test_the_ui_shows_the_experiment_runs(logged_over_http, tmp_path):
    browser = chromium()
    with urllib.request.urlopen(
        f"{logged_over_http}/api/2.0/mlflow/experiments/get-by-name?experiment_name=over-http", timeout=10
    ) as response:
        experiment_id = json.loads(response.read())["experiment"]["experiment_id"]
    page = f"{logged_over_http}/#/experiments/{experiment_id}/runs"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,900",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180
    ).stdout
    assert "over-http" in dom, "the experiment is not on the page"
    assert "prepare" in dom, "the run is not listed"
    shot = tmp_path / "ui.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 10_000
    keep = os.environ.get("TRANSFERLAB_UI_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot.read_bytes())


# A stage that logs to a server which dies under it: one UserError line soon after, not MLflow's
# 7 retries per request over about 4 minutes (before, a stage hung for a quarter of an hour).
SERVER_DIES = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[3])
from conftest import make_config
from transferlab.errors import UserError
from transferlab.tracking import stage_run

cfg = make_config("experiment=tiny", "tracking.uri=" + sys.argv[1])
started = None
try:
    with stage_run("prepare", cfg) as run_log:
        os.killpg(int(sys.argv[2]), signal.SIGKILL)  # the server and its workers
        time.sleep(1)
        started = time.monotonic()
        run_log.log_metrics({"examples": 1.0})
except UserError as err:
    print(f"{time.monotonic() - started:.1f} s: {err}")
"""


def test_a_server_that_dies_during_a_stage_ends_it_in_one_line_within_a_minute(tmp_path: Path, monkeypatch):
    import mlflow

    from conftest import make_config
    from transferlab.tracking.store import open_store

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start_server() -> subprocess.Popen:
        server = subprocess.Popen(
            ["mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'store.db'}"]
            + ["--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1"]
            + ["--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            env=tool_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its workers go with it
        )
        wait_until_up(f"{url}/health", server)
        return server

    server = start_server()
    try:
        result = subprocess.run(
            [sys.executable, "-c", SERVER_DIES, url, str(server.pid), str(REPO / "tests")],
            cwd=tmp_path,
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        os.killpg(server.pid, 9) if server.poll() is None else None
        server.wait(timeout=30)
    lines = result.stdout.strip().splitlines()
    assert (
        lines and f"MLflow tracking server {url} stopped answering during the prepare stage" in lines[-1]
    ), result.stdout + result.stderr[-3000:]
    assert float(lines[-1].split(" s:")[0]) < 60
    assert "the rerun marks FAILED the runs left RUNNING there" in lines[-1]

    server = start_server()  # back: the rerun's first step closes the run the dead stage left open
    try:
        monkeypatch.chdir(tmp_path)
        client = mlflow.MlflowClient(url)
        [left] = client.search_runs([client.get_experiment_by_name("transferlab").experiment_id])
        assert left.info.status == "RUNNING"
        open_store(make_config(f"tracking.uri={url}"))
        assert client.get_run(left.info.run_id).info.status == "FAILED"
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)
