"""Fine-tuning techniques on real (tiny) models: freezing, gradual unfreezing, LR groups, the
torch.nn encoder and a trained tokenizer going through the same stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_config
from transferlab.contracts import FINETUNE_METRICS, FINETUNED
from transferlab.errors import UserError
from transferlab.stages import prepare
from transferlab.tasks.classification import evaluate, finetune, train
from transferlab.training import freezing, techniques

TINY = ("experiment=tiny", "tracking.enabled=false", "data.max_per_label=6")


def tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def test_split_finds_embeddings_layers_and_head():
    parts = freezing.split(tiny_classifier())
    assert len(parts.layers) == 3
    assert all(n.startswith("bert.embeddings.") for n, _ in parts.embeddings)
    assert all(".layer.2." in n for n, _ in parts.layers[2])
    assert sorted(n for n, _ in parts.head) == ["classifier.bias", "classifier.weight"]
    assert {n for n, _ in parts.other_backbone} == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}


def test_parameter_groups_carry_the_configured_learning_rates():
    parts = freezing.split(tiny_classifier())
    groups = techniques.parameter_groups(
        parts, backbone_lr=1e-3, head_lr=1e-2, layer_decay=0.5, weight_decay=0.1, include=lambda p: True
    )
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(1e-2)
    assert lr["layer_2"] == pytest.approx(1e-3)
    assert lr["layer_1"] == pytest.approx(5e-4)
    assert lr["layer_0"] == pytest.approx(2.5e-4)
    assert lr["embeddings"] == pytest.approx(1.25e-4)
    decay = {g["name"]: g["weight_decay"] for g in groups}
    assert decay["layer_0"] == 0.1 and decay["layer_0/no_decay"] == 0.0
    grouped = sum(len(g["params"]) for g in groups)
    assert grouped == len(list(tiny_classifier().parameters()))


def test_gradual_unfreezing_opens_one_layer_at_a_time_top_down():
    from transformers import TrainerState

    model = tiny_classifier()
    parts = freezing.split(model)
    callback = freezing.gradual_unfreezing_callback(parts, every=2, unit="step", keep_frozen=set())

    def trainable_units():
        units = [all(p.requires_grad for _, p in layer) for layer in parts.layers]
        return units + [all(p.requires_grad for _, p in parts.embeddings)]

    state = TrainerState()
    seen = {}
    for step in range(0, 10):
        state.global_step = step
        callback.on_step_begin(None, state, None)
        seen[step] = trainable_units()
        assert all(p.requires_grad for _, p in parts.head)
    assert seen[0] == seen[1] == [False, False, False, False]
    assert seen[2] == seen[3] == [False, False, True, False]  # top layer first
    assert seen[4] == [False, True, True, False]
    assert seen[6] == [True, True, True, False]
    assert seen[8] == [True, True, True, True]  # embeddings last
    assert callback.history == [(2, 1), (4, 2), (6, 3), (8, 4)]


def test_permanently_frozen_layers_are_not_units_of_gradual_unfreezing(caplog):
    from transformers import TrainerState

    caplog.set_level("INFO")
    parts = freezing.split(tiny_classifier())
    frozen = set(freezing.freeze(parts, embeddings=False, layers=1, patterns=[], backbone=False))
    callback = freezing.gradual_unfreezing_callback(parts, every=2, unit="step", keep_frozen=frozen)
    state = TrainerState()
    for step in range(10):
        state.global_step = step
        callback.on_step_begin(None, state, None)
    # Layer 0 stays frozen, so the log counts 3 units (top layer, middle layer, embeddings), not 4.
    assert callback.history == [(2, 1), (4, 2), (6, 3)]
    assert not any(p.requires_grad for _, p in parts.layers[0])
    assert all(p.requires_grad for n, p in parts.all() if n not in frozen)
    assert "gradual unfreezing: 3/3 units trainable at step 6" in caplog.text
    # finetune.unfreeze.every in steps beyond the run's length: said, not silently nothing.
    callback.on_train_begin(None, TrainerState(max_steps=4), None)
    assert "finetune.unfreeze.every=2 steps, but the fine-tune runs 4 steps" not in caplog.text
    late = freezing.gradual_unfreezing_callback(parts, every=5, unit="step", keep_frozen=frozen)
    late.on_train_begin(None, TrainerState(max_steps=4), None)
    assert "finetune.unfreeze.every=5 steps, but the fine-tune runs 4 steps" in caplog.text


def test_freezing_more_layers_than_a_checkpoint_has_is_refused():
    parts = freezing.split(tiny_classifier())
    with pytest.raises(
        UserError, match=r"finetune.freeze.layers=4 is more than the model's 3 layers: use 0..3"
    ):
        freezing.freeze(parts, embeddings=False, layers=4, patterns=[], backbone=False)


def weights(folder: str) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def test_frozen_parameters_are_bit_identical_after_fine_tuning(workdir):
    cfg = make_config(
        *TINY,
        "model.num_layers=3",
        "finetune.freeze.embeddings=true",
        "finetune.freeze.layers=2",
        "finetune.epochs=2",
    )
    prepare.run(cfg)
    train.run(cfg)
    summary = finetune.run(cfg)
    before, after = weights("models/pretrained"), weights("models/finetuned")
    frozen = [
        k
        for k in after
        if k.startswith(("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1."))
    ]
    assert frozen
    for key in frozen:
        assert after[key].equal(before[key]), f"{key} changed although frozen"
    top = "bert.encoder.layer.2.output.dense.weight"
    assert not after[top].equal(before[top]), "the unfrozen top layer did not train"
    assert summary["parameters_trainable_at_start"] < summary["parameters"]


def test_gradual_unfreezing_in_a_real_fine_tune(workdir):
    # 1 epoch of 5 steps (20 examples, batch 4), a unit every 3 steps: the top layer opens at step 3,
    # the bottom one would at step 6, which never comes.
    cfg = make_config(
        *TINY, "finetune.unfreeze.every=3", "finetune.unfreeze.unit=step", "finetune.batch_size=4"
    )
    prepare.run(cfg)
    train.run(cfg)
    finetune.run(cfg)
    before, after = weights("models/pretrained"), weights("models/finetuned")
    bottom = "bert.encoder.layer.0.output.dense.weight"
    top = "bert.encoder.layer.1.output.dense.weight"
    assert after[bottom].equal(before[bottom]) and not after[top].equal(before[top])


def test_a_freezing_that_misses_or_leaves_nothing_to_train_stops_the_stage_untouched(workdir):
    cfg = make_config(*TINY)
    prepare.run(cfg)
    train.run(cfg)
    for overrides, expected in [
        (
            ["finetune.freeze.patterns=[.]"],
            "finetune.freeze leaves nothing to train: it freezes all 41 parameter tensors of the model "
            "(finetune.freeze.patterns=['.']); keep at least the head trainable",
        ),
        (
            ["finetune.freeze.patterns=[nomatch_xyz]"],
            "finetune.freeze.patterns: 'nomatch_xyz' matches no parameter of the model (a regex searched "
            "in names such as bert.embeddings.word_embeddings.weight, ",
        ),
    ]:
        with pytest.raises(UserError) as refused:
            finetune.run(make_config(*TINY, *overrides))
        assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
        assert not Path(FINETUNED).exists() and not Path(FINETUNE_METRICS).exists()


@pytest.mark.parametrize(
    "arch, schedule",
    [
        ("gpt2", ["finetune.epochs=2", "finetune.unfreeze.every=1"]),
        ("torch_decoder", ["finetune.unfreeze.every=1", "finetune.unfreeze.unit=step"]),
    ],
)
def test_gradual_unfreezing_trains_a_decoder_whose_lm_head_is_its_input_embeddings(workdir, arch, schedule):
    """The LM head is tied to the input embeddings, which open last: the top layer (with the final
    norm) starts trainable, else step 0 has nothing to train. 2 steps an epoch (16 blocks, batch 8):
    the lower layer opens at step 1 or epoch 2, the embeddings (a third unit) never."""
    from transferlab.tasks.causal_lm import finetune as lm_finetune
    from transferlab.tasks.causal_lm import train as lm_train

    lm = ("experiment=lm_tiny", "tracking.enabled=false", f"model.arch={arch}")
    cfg = make_config(*lm, *schedule)
    prepare.run(cfg)
    lm_train.run(cfg)
    summary = lm_finetune.run(cfg)
    assert 0 < summary["parameters_trainable_at_start"] < summary["parameters"]
    before, after = weights("models/pretrained"), weights("models/finetuned")
    embeddings = [
        k for k in after if k.endswith(("wte.weight", "tokens.weight", "positions.weight", "wpe.weight"))
    ]
    top = [k for k in after if (".h.1." in k or ".layers.1." in k) and k.endswith("weight")]
    assert embeddings and top
    assert all(after[k].equal(before[k]) for k in embeddings), "the embeddings opened too early"
    assert not all(after[k].equal(before[k]) for k in top), "the top layer did not train"
    # The scratch checkpoint has max(1024, 2 x model.max_length) positions: a longer block is refused
    # when the stage loads it (by hand, `transferlab finetune` does not rerun train).
    positions = r"\((n_positions|max_position_embeddings): 1024 in its config.json\)"
    with pytest.raises(
        UserError, match=rf"^model.max_length=1500 is more than models/pretrained reads {positions}"
    ):
        lm_finetune.run(make_config(*lm, *schedule, "model.max_length=1500"))
    from transferlab.tasks.causal_lm import evaluate as lm_evaluate

    with pytest.raises(
        UserError, match=rf"^model.max_length=1500 is more than models/finetuned reads {positions}"
    ):
        lm_evaluate.run(make_config(*lm, *schedule, "model.max_length=1500"))


@pytest.mark.parametrize("tokenizer", ["train", "pretrained"])
def test_torch_transformer_runs_through_every_stage(workdir, tokenizer):
    cfg = make_config(
        *TINY,
        "model=torch_transformer",
        f"model.tokenizer={tokenizer}",
        "model.vocab_size=300",
        "model.hidden_size=32",
        "model.num_heads=2",
        "model.num_layers=2",
        "model.intermediate_size=64",
        "model.max_length=64",
    )
    prepare.run(cfg)
    pretraining = train.run(cfg)
    assert pretraining["validation_perplexity"] > 1
    config = json.loads(Path("models/pretrained/config.json").read_text())
    assert config["model_type"] == "torch_transformer"
    vocab = json.loads(Path("models/pretrained/tokenizer.json").read_text())["model"]["vocab"]
    assert (len(vocab) <= 300) == (tokenizer == "train")
    finetune.run(cfg)
    metrics = evaluate.run(cfg)
    assert 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["baseline_tfidf_logreg"]["accuracy"] <= 1
    head = weights("models/finetuned")["classifier.weight"]
    assert tuple(head.shape) == (5, 32)


def test_overfitting_signal_fires_when_validation_rises_as_training_falls(caplog):
    from transformers import TrainerState

    from transferlab.tracking import StageRun

    watch = techniques.overfitting_callback(StageRun())
    state = TrainerState()
    for epoch, (train_losses, validation_loss) in enumerate(
        [([1.0, 0.9], 0.8), ([0.7, 0.6], 0.7), ([0.5, 0.4], 0.75), ([0.45, 0.5], 0.9)], start=1
    ):
        state.log_history += [{"loss": loss} for loss in train_losses]
        state.log_history.append({"eval_loss": validation_loss, "epoch": float(epoch)})
        watch.on_evaluate(None, state, None, metrics={"eval_loss": validation_loss})
    # Only the third evaluation: validation up (0.7 -> 0.75) while training fell (0.65 -> 0.45).
    # The fourth has both rising: plain divergence, not the overfitting pattern.
    assert techniques.overfitting_signals(state.log_history) == 1
    warned = [r.getMessage() for r in caplog.records if "overfitting signal" in r.getMessage()]
    assert warned == [
        "overfitting signal at epoch 3.00: validation loss rose 0.7000 -> 0.7500 while "
        "training loss fell 0.6500 -> 0.4500"
    ]
