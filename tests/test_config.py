"""Hydra composition of conf/: every group option composes, the schema rejects bad input, and
the committed params.yaml is exactly what composing conf/ gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, make_config
from transferlab.config.compose import compose, to_yaml
from transferlab.config.load import load_params
from transferlab.errors import UserError

GROUPS = ("data", "model", "experiment")  # every other key: one default, in the schema


def options(group: str) -> list[str]:
    folder = REPO / "conf" / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.glob("**/*.yaml"))


def test_every_group_has_a_config_folder_and_a_schema_section():
    from transferlab.config.schema import Config

    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"
        if group != "experiment":
            assert group in Config.__dataclass_fields__


# What an option needs beside it: a data path, or the task the decoders belong to.
CONTEXT = {
    ("data", "files"): ["data.path=some.csv"],
    ("data", "text"): ["data.path=some.txt"],
    **{("model", decoder): ["task=causal_lm"] for decoder in ("smollm2", "scratch_gpt", "torch_decoder")},
}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_passes_the_checks(group, option):
    cfg = make_config(f"{group}={option}", *CONTEXT.get((group, option), []))
    # The file's own values really land in the composed config.
    path = REPO / "conf" / group / f"{option}.yaml"
    own = yaml.safe_load(path.read_text()) or {}
    own.pop("defaults", None)
    if "@package _global_" not in path.read_text().splitlines()[0]:
        own = {group: own}
    for key, value in leaves(own):
        if value != "???":
            assert OmegaConf.select(cfg, key) == value, key


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_params_yaml_is_the_default_composition():
    committed = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert committed == to_yaml(compose([], REPO / "conf")), (
        "params.yaml drifted from conf/: run `transferlab compose` and commit it"
    )


def test_tiny_experiment_is_tiny():
    cfg = make_config("experiment=tiny")
    assert cfg.model.init == "scratch" and cfg.model.num_layers == 2
    assert cfg.model.hidden_size == 32 and cfg.finetune.epochs == 1
    assert cfg.data.max_per_label * 5 <= 60


def test_smoke_runs_register_their_models_apart_from_the_real_ones():
    """Before: on a team server, a first `experiment=tiny` run took transferlab-classifier@champion
    (test accuracy 0.2 on 5 rows), and the real model, scored on other test data, never could."""
    assert make_config().tracking.registered_model == "transferlab-classifier"
    assert make_config("experiment=tiny").tracking.registered_model == "transferlab-classifier-tiny"
    assert make_config("task=causal_lm").tracking.registered_model == "transferlab-lm"
    assert make_config("experiment=lm_tiny").tracking.registered_model == "transferlab-lm-tiny"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("finetune.backbone_lr=abc", "could not be converted to Float"),
        ("finetune.lrr=0.1", "Key 'lrr' not in 'FinetuneConfig'"),
        ("model=gpt17", "Could not find 'model/gpt17'"),
        ("data=nowhere", "Could not find 'data/nowhere'"),
        ("+surprise=1", "Key 'surprise' not in 'Config'"),
        ("+finetune.surprise=1", "Key 'surprise' not in 'FinetuneConfig'"),
        ("device=gpu", "device='gpu' is not one of auto, cpu, cuda"),
        (
            "model.arch=gpt5",
            "model.arch='gpt5' is not one of bert, torch_transformer, gpt2, llama, torch_decoder",
        ),
    ],
)
def test_composition_rejects_unknown_keys_choices_and_wrong_types(override, expected):
    with pytest.raises(UserError, match="cannot compose config") as caught:
        compose([override], REPO / "conf")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("finetune.batch_size=0", "finetune.batch_size=0 must be > 0"),
        ("train.steps=-1", "train.steps=-1 must be >= 0"),
        ("data.test_fraction=1.5", "data.test_fraction=1.5 must be in [0, 1)"),
        ("device=tpu", "device='tpu' is not one of auto, cpu, cuda"),
        ("repro=exact", "repro='exact' is not one of strict, fast"),
        ("checkpoint.every_steps=-1", "checkpoint.every_steps=-1 must be >= 0"),
        ("model.tokenizer=train", "model.tokenizer=train needs model.init=scratch"),
        ("finetune.unfreeze.unit=week", "finetune.unfreeze.unit='week' is not one of epoch, step"),
        ("finetune.layer_lr_decay=1.5", "finetune.layer_lr_decay must be in (0, 1]"),
        ('finetune.freeze.patterns=["("]', "is not a regex"),
        ("data=files", "data=files needs data.path"),
        ("model=scratch model.num_heads=5", "multiple of model.num_heads"),
    ],
)
def test_value_checks_name_the_bad_key(override, expected):
    with pytest.raises(UserError) as caught:
        make_config(*override.split())
    assert expected in str(caught.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_params_reads_a_composed_file(tmp_path):
    params = write(tmp_path / "params.yaml", to_yaml(compose(["model=scratch"], REPO / "conf")))
    cfg = load_params(params)
    assert cfg.model.init == "scratch" and cfg.finetune.backbone_lr == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "edit,expected",
    [
        (
            lambda t: t.replace("backbone_lr: 5.0e-05", "backbone_lr: abc"),
            "finetune.backbone_lr: Value 'abc'",
        ),
        (lambda t: t.replace("epochs: 3", "epochz: 3"), "Key 'epochz' not in 'FinetuneConfig'"),
        (lambda t: t + "  oops: [\n", "not valid YAML"),
        (
            lambda t: t.replace("source: bbc_news\n  path: null", "source: files\n  path: ???"),
            "data=files needs data.path",
        ),
    ],
)
def test_load_params_rejects_hand_edits(tmp_path, edit, expected):
    text = to_yaml(compose([], REPO / "conf"))
    params = write(tmp_path / "params.yaml", edit(text))
    with pytest.raises(UserError) as caught:
        load_params(params)
    assert expected in str(caught.value)


def test_missing_params_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="transferlab compose"):
        load_params(tmp_path / "params.yaml")
