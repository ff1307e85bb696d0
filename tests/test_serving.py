"""The served classifier and the `make serve` / `make ui` targets, for real: `make serve` of the
tiny pipeline's champion on a loopback port (what a request that is not texts gets back, every
input form MLflow takes), a large request in fixed-size batches, and both targets' one-line refusals
(no champion in the store; a tracking server, which has a UI of its own)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, free_port, tool_env, wait_until_up

pytestmark = pytest.mark.slow
TEXTS = ["Shares rose after strong quarterly profits.", "The striker scored twice in the cup final."]


def post(port: int, payload: dict) -> tuple[int, dict]:
    """POST `payload` to /invocations: the HTTP status and the JSON answer (an error's too)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def make(target: str, repo: Path, **env: str) -> subprocess.CompletedProcess:
    """`make -C repo <target>` as a user runs it, minus the .venv build (the test's venv is on PATH)."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(repo),
            target,
            "STAMP=",
            "TORCH=cpu",
            f"SERVE_PORT={free_port()}",
        ],
        env=tool_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_serve_answers_400_naming_the_first_item_that_is_not_a_string(tiny_repo: Path):
    port = free_port()
    server = subprocess.Popen(
        [
            "make",
            "-C",
            str(tiny_repo),
            "serve",
            "STAMP=",
            "TORCH=cpu",
            f"SERVE_PORT={port}",
            "MODEL=transferlab-classifier-tiny",
        ],
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make, mlflow and uvicorn: stopped together below
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, seconds=180)
        refused = {
            "inputs[0] is a number (42)": {"inputs": [42]},
            "inputs[0] is null": {"inputs": [None]},
            "inputs[1] is a number (1)": {"inputs": ["a", 1, {"x": 1}]},
            'inputs[0] is an array (["a", "b"])': {"inputs": [["a", "b"]]},
            "inputs is a number (5), not a list of strings": {"inputs": 5},
            "inputs[0] is a boolean (true)": {"inputs": [True]},
            "instances[1] is a number (7)": {"instances": ["a", 7]},
            "instances[1].text is a number (2.5)": {"instances": [{"text": "a"}, {"text": 2.5}]},
            "row 1 of column 'text' is a number (3)": {
                "dataframe_split": {"columns": ["text"], "data": [["a"], [3]]}
            },
            "row 1 of column 'text' is null": {"dataframe_records": [{"text": "a"}, {"text": None}]},
            # before: MLflow's "Failed to enforce schema" about its signature
            "inputs is an empty list: send texts": {"inputs": []},
            "instances is an empty list": {"instances": []},
            "there is no text in the request": {"dataframe_split": {"columns": ["text"], "data": []}},
        }
        for message, payload in refused.items():
            status, answer = post(port, payload)
            assert status == 400, (payload, status, answer)
            assert answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert message in answer["message"], answer

        # Every form of a list of texts still gets the same predictions.
        forms = [
            {"instances": TEXTS},
            {"inputs": [{"text": text} for text in TEXTS]},
            {"instances": [{"text": text} for text in TEXTS]},
            {"dataframe_split": {"columns": ["text"], "data": [[text] for text in TEXTS]}},
            {"dataframe_records": [{"text": text} for text in TEXTS]},
        ]
        status, expected = post(port, {"inputs": TEXTS})
        assert status == 200 and len(expected["predictions"]) == 2, expected
        for payload in forms:
            assert post(port, payload) == (200, expected), payload
        status, one = post(port, {"inputs": TEXTS[0]})
        assert status == 200 and one["predictions"] == expected["predictions"][:1]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_large_request_runs_in_batches_with_the_same_predictions(tiny_repo: Path, monkeypatch):
    import mlflow
    import numpy as np

    from transferlab.tasks.classification.serving import class_probabilities

    monkeypatch.chdir(tiny_repo)
    # In-process: another test of this worker may have set MLflow's URIs, which outrank the variable.
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    store_uri = f"sqlite:///{tiny_repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_registry_uri(store_uri)
    try:
        served = mlflow.pyfunc.load_model("models:/transferlab-classifier-tiny@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    classifier = served.unwrap_python_model()
    rows = []
    hook = classifier.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    # of many lengths, so that each batch pads differently from one pass over all of them
    texts = [
        " ".join(["goal", "profit", "vote", "film", "chip"][: 1 + i % 5] * (1 + i % 13)) for i in range(150)
    ]
    try:
        answer = served.predict(texts)
    finally:
        hook.remove()
    # forward passes of one size (the model config's batch size, else 64), then the rest
    assert sum(rows) == 150 and max(rows) <= 64 and set(rows[:-1]) == {rows[0]}, rows
    # as the server answered before it batched: all of them in one forward pass
    one_pass = class_probabilities(
        classifier.model,
        classifier.tokenizer,
        texts,
        batch_size=len(texts),
        device="cpu",
        **classifier.reading,
    )
    labels = [classifier.model.config.id2label[int(i)] for i in one_pass.argmax(-1)]
    assert answer["label"].tolist() == labels
    np.testing.assert_allclose(answer["score"], one_pass.max(-1), atol=1e-5)


def test_make_serve_without_a_champion_says_so_in_one_line(tmp_path: Path):
    import mlflow

    registered_only = f"sqlite:///{tmp_path / 'registered.db'}"
    client = mlflow.MlflowClient(registered_only, registry_uri=registered_only)  # whatever is set globally
    client.create_registered_model("transferlab-classifier")  # no alias
    for uri in (f"sqlite:///{tmp_path / 'fresh.db'}", registered_only):
        result = make("serve", REPO, MLFLOW_TRACKING_URI=uri)
        assert result.returncode != 0
        assert result.stdout == "", result.stdout  # the server never started
        first, *rest = result.stderr.splitlines()
        assert first == f"no @champion of transferlab-classifier in {uri}: run `make run` first"
        assert len(rest) == 1 and re.match(r"make(\[\d+\])?: \*\*\*", rest[0]), (
            result.stderr
        )  # make[1] under make test
    assert not (tmp_path / "fresh.db").exists()  # a store that was not there is not created


def test_make_ui_with_a_tracking_server_sends_the_browser_to_its_ui():
    url = f"http://127.0.0.1:{free_port()}"
    for uri, shown in (
        (url, url),
        (url.replace("//", "//me:pw-7c1@"), url.replace("//", "//me:<redacted>@")),
    ):
        result = make("ui", REPO, MLFLOW_TRACKING_URI=uri)
        assert result.returncode != 0 and result.stdout == "", result.stdout
        first, *rest = result.stderr.splitlines()
        assert first == (
            f"MLFLOW_TRACKING_URI={shown} is a tracking server, which already has a UI: "
            f"open {shown} in the browser"
        )
        assert len(rest) == 1 and re.match(r"make(\[\d+\])?: \*\*\*", rest[0]), (
            result.stderr
        )  # make[1] under make test
        assert "pw-7c1" not in result.stderr
