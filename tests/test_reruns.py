"""What a change reruns, through the real DVC CLI in a private copy of the tiny pipeline: a
finetune param reruns finetune and evaluate only (under one MLflow parent run), `dvc repro --force`
gives identical metrics and weights, `dvc exp run -S` goes through Hydra composition, and going
back to the earlier config restores it from DVC's run cache without training."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import STAGE, sh, tool_env

pytestmark = pytest.mark.slow


def test_a_truncation_change_never_reruns_train(tiny_copy: Path):
    """Before: dvc.yaml gave train all of model.*, so this reran train (400 steps of pretraining
    for torch_transformer) although only finetune and evaluate read it."""
    params = tiny_copy / "params.yaml"
    params.write_text(params.read_text().replace("truncation: head\n", "truncation: head_tail\n"))
    status = json.loads(sh("dvc", "status", "--json", cwd=tiny_copy).stdout)
    assert sorted(status) == ["evaluate", "finetune"]


def test_finetune_change_reruns_only_finetune_and_evaluate(tiny_copy: Path):
    params = tiny_copy / "params.yaml"
    params.write_text(params.read_text().replace("head_lr: 0.001", "head_lr: 0.003"))
    status = json.loads(sh("dvc", "status", "--json", cwd=tiny_copy).stdout)
    assert sorted(status) == ["finetune"]
    log = sh("transferlab", "run", cwd=tiny_copy).stdout  # `dvc repro` under a parent MLflow run
    assert "Stage 'prepare' didn't change, skipping" in log
    assert "Stage 'train' didn't change, skipping" in log
    assert "Running stage 'finetune'" in log and "Running stage 'evaluate'" in log
    # The MLflow tree: one parent, the two stages that ran as children, the skipped two linked.
    db = sqlite3.connect(tiny_copy / "mlflow.db")
    [(parent, parent_name)] = db.execute(f"select r.run_uuid, r.name from runs r where {STAGE} = 'pipeline'")
    assert parent_name == "pipeline · bert-2x32-scratch-64"
    children = dict(
        db.execute(
            f"select {STAGE}, r.run_uuid from runs r join tags t on r.run_uuid = "
            "t.run_uuid where t.key = 'mlflow.parentRunId' and t.value = ?",
            (parent,),
        )
    )
    assert sorted(children) == ["evaluate", "finetune"]
    links = dict(
        db.execute("select key, value from tags where run_uuid = ? and key like 'lineage.%'", (parent,))
    )
    first = dict(db.execute(f"select {STAGE}, r.run_uuid from runs r where {STAGE} in ('prepare', 'train')"))
    assert links == {"lineage.prepare_run_id": first["prepare"], "lineage.train_run_id": first["train"]}
    assert dict(
        db.execute(
            "select key, value from tags where run_uuid = ? and key = 'lineage.train_run_id'",
            (children["finetune"],),
        )
    ) == {"lineage.train_run_id": first["train"]}
    # The dvc.lock hash of what each stage wrote, on the parent and on the child that wrote it.
    lock = yaml.safe_load((tiny_copy / "dvc.lock").read_text())["stages"]
    model_md5 = next(o["md5"] for o in lock["finetune"]["outs"] if o["path"] == "models/finetuned")
    key = "dvc.lock.finetune.models/finetuned"
    for run_id in (parent, children["finetune"]):
        assert db.execute(
            "select value from tags where run_uuid = ? and key = ?", (run_id, key)
        ).fetchone() == (model_md5,)


def registry(repo: Path) -> tuple[list[int], int | None]:
    db = sqlite3.connect(repo / "mlflow.db")
    versions = [
        v
        for (v,) in db.execute(
            "select version from model_versions where name = 'transferlab-classifier-tiny' order by version"
        )
    ]
    alias = db.execute(
        "select version from registered_model_aliases where name = "
        "'transferlab-classifier-tiny' and alias = 'champion'"
    ).fetchone()
    return versions, alias and alias[0]


def test_forced_repro_gives_identical_metrics_and_weights(tiny_copy: Path):
    import hashlib

    def snapshot():  # every metrics file and the hash of every model file
        files = sorted([*tiny_copy.glob("metrics/*.json"), *(tiny_copy / "models").rglob("*")])
        return {
            str(p.relative_to(tiny_copy)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files
            if p.is_file()
        }

    # repro=strict is the default, and a training run records what it set.
    assert yaml.safe_load((tiny_copy / "params.yaml").read_text())["repro"] == "strict"
    db = sqlite3.connect(tiny_copy / "mlflow.db")
    tags = dict(
        db.execute(
            "select t.key, t.value from tags t join runs r on r.run_uuid = t.run_uuid "
            f"where {STAGE} = 'finetune' and t.key like 'repro%'"
        )
    )
    assert tags == {
        "repro": "strict",
        "repro.seed": "42",
        "repro.deterministic_algorithms": "True",
        "repro.fill_uninitialized_memory": "False",
        "repro.cudnn_benchmark": "False",
        "repro.tf32": "False",
        "repro.cublas_workspace_config": ":4096:8",
    }
    before = snapshot()
    assert "models/finetuned/model.safetensors" in before and "models/pretrained/model.safetensors" in before
    assert registry(tiny_copy) == ([1], 1)
    sh("dvc", "repro", "--force", cwd=tiny_copy)
    assert snapshot() == before
    # A new version is registered, but an equal score does not take the champion alias.
    assert registry(tiny_copy) == ([1, 2], 1)


def test_an_edit_to_a_data_file_in_data_raw_makes_prepare_run_again(tiny_copy: Path):
    """data/raw/ is a dependency of prepare: DVC sees an edit to the user's table (before, data.path
    was only a param, so `dvc repro` kept the old split of an edited file)."""
    table = tiny_copy / "data/raw/topics.csv"
    rows = [f"{label} text number {i},{label}" for label in ("alpha", "beta", "gamma") for i in range(8)]
    table.write_text("text,label\n" + "\n".join(rows) + "\n")
    compose = ("transferlab", "compose", "experiment=tiny", "data=files", "data.path=data/raw/topics.csv")
    sh(*compose, cwd=tiny_copy)
    sh("dvc", "repro", "prepare", cwd=tiny_copy)
    assert json.loads(sh("dvc", "status", "--json", "prepare", cwd=tiny_copy).stdout) == {}
    table.write_text(table.read_text().replace("alpha text number 0,alpha", "alpha text number 0,beta"))
    status = json.loads(sh("dvc", "status", "--json", "prepare", cwd=tiny_copy).stdout)
    assert status["prepare"] == [{"changed deps": {"data/raw": "modified"}}], status


def test_a_model_scored_on_other_test_data_does_not_take_the_champion_alias(tiny_copy: Path):
    """Scores on other test data do not compare (a smoke test on a few rows, another data set):
    the new version is registered, the alias stays, and the log says why."""
    import pandas as pd

    test_split = tiny_copy / "data/prepared/test.parquet"
    rows = pd.read_parquet(test_split)
    rows.iloc[: len(rows) // 2].to_parquet(test_split)
    assert registry(tiny_copy) == ([1], 1)
    result = sh("transferlab", "evaluate", cwd=tiny_copy)
    assert registry(tiny_copy) == ([1, 2], 1)
    assert "@champion stays on version 1, scored on other test data" in result.stdout + result.stderr


def test_exp_run_composes_params_through_hydra_and_an_earlier_config_comes_back_from_the_run_cache(
    tiny_copy: Path,
):
    import hashlib

    def outputs():  # what finetune and evaluate made, file by file
        files = sorted([*tiny_copy.glob("metrics/*.json"), *(tiny_copy / "models/finetuned").rglob("*")])
        return {
            str(p.relative_to(tiny_copy)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files
            if p.is_file()
        }

    def finetune_runs() -> int:
        db = sqlite3.connect(tiny_copy / "mlflow.db")
        return db.execute(f"select count(*) from runs r where {STAGE} = 'finetune'").fetchone()[0]

    sh("git", "add", "-A", cwd=tiny_copy)
    sh("git", "commit", "-q", "-m", "tiny results", cwd=tiny_copy)
    first, runs = outputs(), finetune_runs()
    sh("dvc", "exp", "run", "-S", "experiment=tiny", "-S", "finetune.batch_size=4", cwd=tiny_copy)
    params = yaml.safe_load((tiny_copy / "params.yaml").read_text())
    assert params["finetune"]["batch_size"] == 4 and params["model"]["init"] == "scratch"
    assert finetune_runs() == runs + 1 and outputs() != first, "a new config must train"
    db = sqlite3.connect(tiny_copy / "mlflow.db")
    tagged = db.execute("select count(distinct value) from tags where key = 'dvc.experiment'").fetchone()[0]
    assert tagged == 1, "the runs of `dvc exp run` are not tagged with the DVC experiment name"
    named = db.execute(
        "select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'dvc.experiment'"
    ).fetchall()
    assert sorted(name.split(" · ")[0] for name, _ in named) == ["evaluate", "finetune"]
    assert all(name.split(" · ")[1] == experiment for name, experiment in named), named  # in the name too
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=tiny_copy).stdout)
    assert "finetune" in json.dumps(shown) and "accuracy" in json.dumps(shown)
    # Back to the committed config: DVC's run cache, not a rerun.
    back = sh("dvc", "exp", "run", "-S", "experiment=tiny", cwd=tiny_copy)
    log = back.stdout + back.stderr
    for stage in ("finetune", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in log, log
    assert finetune_runs() == runs + 1, "returning to an earlier config trained again"
    assert outputs() == first
    assert json.loads(sh("dvc", "status", "--json", cwd=tiny_copy).stdout) == {}


def test_params_yaml_changed_while_a_stage_ran_keeps_none_of_its_outputs(tiny_copy: Path):
    """Before: a second `dvc exp run -S` rewrote params.yaml while the first one's finetune trained,
    and DVC recorded the new head_lr with the model of the old one, in dvc.lock and its run cache
    (a later run of the new value was "cached - skipping run" with the wrong model)."""
    params = tiny_copy / "params.yaml"
    params.write_text(params.read_text().replace("head_lr: 0.001", "head_lr: 0.003"))
    lock = (tiny_copy / "dvc.lock").read_bytes()
    repro = subprocess.Popen(
        ["dvc", "repro"],
        cwd=tiny_copy,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    for line in repro.stdout:  # the stage has read params.yaml once its MLflow run is open
        output += line
        if "(finetune) in " in line:
            break
    params.write_text(params.read_text().replace("head_lr: 0.003", "head_lr: 0.005"))
    output += repro.stdout.read()
    assert repro.wait() != 0, output
    assert "transferlab finetune: error: params.yaml changed while this stage ran" in output, output
    assert "transferlab finetune: put back the last good outputs" in output, output
    assert (tiny_copy / "dvc.lock").read_bytes() == lock
    log = sh("dvc", "repro", cwd=tiny_copy).stdout  # nothing cached for 0.005: it trains for real
    assert "Running stage 'finetune'" in log and "skipping run" not in log, log
