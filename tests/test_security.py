"""Security defaults: code shipped with a checkpoint never runs unless model.trust_remote_code is
set, every server the project starts listens on 127.0.0.1 only, and credentials come from the
environment and never reach logs, params or the store."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, make_config, sh, tool_env

REMOTE_CODE = """\
import os
import pathlib

pathlib.Path(os.environ["REMOTE_CODE_MARKER"]).write_text("the checkpoint's code ran")

from transformers import BertConfig, BertModel


class RemoteConfig(BertConfig):
    model_type = "remote-bert"


class RemoteModel(BertModel):
    config_class = RemoteConfig
"""


def checkpoint_with_code(folder: Path) -> Path:
    """A small BERT whose config.json points the Auto classes at Python shipped in the folder
    (`auto_map`), as hub repositories with custom architectures do. Importing it leaves a marker."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from transferlab.config.schema import MINILM
    from transferlab.packages import resolve

    tok = AutoTokenizer.from_pretrained(resolve(MINILM))
    BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="remote-bert",
        architectures=["RemoteModel"],
        auto_map={"AutoConfig": "remote_code.RemoteConfig", "AutoModel": "remote_code.RemoteModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "remote_code.py").write_text(REMOTE_CODE)
    return folder


def test_trust_remote_code_defaults_to_false_everywhere():
    assert make_config().model.trust_remote_code is False
    for option in sorted(p.stem for p in (REPO / "conf/model").glob("*.yaml")):
        extra = ["task=causal_lm"] if option in ("smollm2", "scratch_gpt", "torch_decoder") else []
        assert make_config(f"model={option}", *extra).model.trust_remote_code is False, option
    assert "trust_remote_code: false" in (REPO / "params.yaml").read_text()


def test_code_in_a_checkpoint_runs_only_when_trusted_explicitly(tmp_path):
    ckpt = checkpoint_with_code(tmp_path / "checkpoint")
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "marker"
    env = {"REMOTE_CODE_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    common = [
        "--config-dir",
        str(REPO / "conf"),
        "tracking.enabled=false",
        "data.max_per_label=4",
        "model.max_length=32",
        f"model.name_or_path={ckpt}",
    ]
    sh("transferlab", "compose", *common, cwd=work)
    sh("transferlab", "prepare", cwd=work)

    refused = sh("transferlab", "train", cwd=work, check=False, **env)
    assert refused.returncode == 2, refused.stderr
    assert f"model.name_or_path='{ckpt}' ships its own Python code" in refused.stderr
    assert "model.trust_remote_code=true" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not marker.exists(), "the checkpoint's code ran without model.trust_remote_code"
    assert not (work / "models/pretrained").exists()

    sh("transferlab", "compose", *common, "model.trust_remote_code=true", cwd=work)
    sh("transferlab", "train", cwd=work, **env)
    assert marker.is_file(), "model.trust_remote_code=true did not load the checkpoint's own code"
    assert json.loads((work / "models/pretrained/config.json").read_text())["model_type"] == "remote-bert"


# --- servers --------------------------------------------------------------------------------------


def server_commands(targets: str) -> list[str]:
    """The commands `make <targets>` would run (make -n prints them without running anything)."""
    printed = sh("make", "-n", *targets.split(), cwd=REPO).stdout.replace("\\\n", " ")
    return [
        line
        for line in printed.splitlines()
        if "mlflow ui" in line or "mlflow server" in line or "models serve" in line
    ]


def test_every_server_command_binds_loopback():
    commands = server_commands("ui serve")
    assert len(commands) == 2, commands
    for command in commands:
        assert "--host 127.0.0.1" in command and "0.0.0.0" not in command, command
    # The README's server commands (and MLflow's own default when --host is left out).
    readme = (REPO / "README.md").read_text()
    assert "0.0.0.0" not in readme
    help_text = sh("mlflow", "server", "--help", cwd=REPO).stdout
    assert "default: 127.0.0.1" in " ".join(help_text.split())


def listening_addresses(pid: int) -> set[str]:
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        f"{c.laddr.ip}:{c.laddr.port}"
        for p in processes
        for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }


@pytest.mark.slow
def test_make_ui_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = tool_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'ui.db'}", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"
    )
    ui = subprocess.Popen(
        ["make", "ui", f"UI_PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, ui.stdout.read()
                time.sleep(0.5)
        assert listening_addresses(ui.pid) == {f"127.0.0.1:{port}"}
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


# --- credentials --------------------------------------------------------------------------------


def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path):
    secret = "pw-5e1f0c3a"
    sh("transferlab", "compose", "--config-dir", str(REPO / "conf"), "data.max_per_label=4", cwd=tmp_path)
    uri = f"http://me:{secret}@127.0.0.1:{free_port()}"
    result = sh("transferlab", "prepare", cwd=tmp_path, check=False, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 2
    assert "http://me:<redacted>@127.0.0.1" in result.stderr and secret not in result.stdout + result.stderr


def test_credentials_belong_in_the_environment_not_in_params():
    from transferlab.errors import UserError

    with pytest.raises(UserError, match="MLFLOW_TRACKING_PASSWORD"):
        make_config("tracking.uri=https://me:hunter2@mlflow.example.invalid")
    make_config("tracking.uri=https://mlflow.example.invalid")  # no password: fine
