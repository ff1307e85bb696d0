"""The speed levers (conf/runtime, precision, finetune.attention_dropout) reach the training they
are meant to change: real TrainingArguments, real optimizers, a real MiniLM fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_config
from transferlab.errors import UserError
from transferlab.stages import prepare
from transferlab.tasks.classification import finetune, train
from transferlab.training import kernels, precision, runtime

TINY_MINILM = ("data.max_per_label=5", "model.max_length=32", "finetune.batch_size=4", "finetune.epochs=1")


def test_each_lever_reaches_the_training_arguments(tmp_path):
    default = runtime.training_arguments(make_config(), str(tmp_path))
    # precision=auto: bf16 exactly where this CPU runs it natively and faster than fp32
    assert default.bf16 == precision.cpu_prefers_bf16() and not default.fp16
    assert default.dataloader_num_workers == 0 and not default.dataloader_pin_memory
    assert default.train_sampling_strategy == "random" and not default.torch_compile
    assert runtime.training_arguments(make_config("precision=bf16"), str(tmp_path)).bf16
    flipped = runtime.training_arguments(
        make_config(
            "precision=fp32",
            "runtime.dataloader_workers=2",
            "runtime.group_by_length=true",
            "runtime.compile=true",
        ),
        str(tmp_path),
    )
    assert not flipped.bf16 and flipped.dataloader_num_workers == 2
    assert flipped.dataloader_persistent_workers and flipped.train_sampling_strategy == "group_by_length"
    assert flipped.torch_compile


@pytest.fixture
def fresh_probe():
    """The bf16 speed probe measured anew (it is cached per process), and forgotten afterwards."""
    probe = precision.cpu_bf16_matmul_speedup
    probe.cache_clear()
    yield probe
    probe.cache_clear()


def test_auto_precision_takes_bf16_only_where_it_is_native_and_faster(monkeypatch, fresh_probe):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})  # an AVX512 CPU without BF16
    assert fresh_probe() == 0  # emulated bf16 is not even timed
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    # AMD EPYC (4x), Intel Xeon without AMX (0.6x: native, yet slower than fp32), the threshold
    for speedup, expected in ((4.0, "bf16"), (0.6, "fp32"), (precision.BF16_MIN_SPEEDUP, "bf16")):
        monkeypatch.setattr(precision, "cpu_bf16_matmul_speedup", lambda speedup=speedup: speedup)
        assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


def test_this_cpus_bf16_speed_is_measured_without_moving_the_seeded_stream(fresh_probe):
    import torch

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    speedup = fresh_probe()
    assert torch.equal(torch.rand(3), expected)
    assert (speedup > 0) == precision.cpu_has_native_bf16()
    resolved = precision.resolve_precision("auto", "cpu")
    assert resolved == ("bf16" if speedup >= precision.BF16_MIN_SPEEDUP else "fp32")


def test_this_machines_flags_are_read():
    import platform

    if platform.system() != "Linux":
        pytest.skip("/proc/cpuinfo is Linux's")
    flags = precision.cpu_flags()
    assert flags and ("sse2" in flags or "asimd" in flags or "fp" in flags)


def test_emulated_bf16_runs_with_one_warning(monkeypatch, caplog, fresh_probe):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    precision._warn_slow_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="transferlab.training.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "emulated" in warnings[0] and "30x slower" in warnings[0]


def test_native_but_slower_bf16_runs_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(precision, "cpu_bf16_matmul_speedup", lambda: 0.62)
    precision._warn_slow_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="transferlab.training.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "only 0.62x as fast as fp32" in warnings[0]
    assert "precision=auto picks fp32" in warnings[0]
    precision._warn_slow_bf16.cache_clear()


def test_fp16_on_a_cpu_is_one_clear_error():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        precision.resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="precision"):
        make_config("precision=fp8")


def test_machine_tags_record_the_resolved_precision():
    tags = runtime.machine_tags(make_config())
    assert tags["precision.requested"] == "auto" and tags["device"] == "cpu"
    assert tags["precision"] == ("bf16" if precision.cpu_prefers_bf16() else "fp32")
    assert float(tags["cpu.bf16_matmul_speedup"]) == precision.cpu_bf16_matmul_speedup()


def test_padding_share_counts_what_random_batches_pad():
    assert runtime.padding_share([128] * 100, 32, seed=0) == 0
    assert runtime.padding_share([10, 100], 2, seed=0) == pytest.approx(1 - 110 / 200)
    assert runtime.padding_share([10, 100], 1, seed=0) == 0


def test_group_by_length_auto_groups_only_where_padding_dominates(tmp_path):
    import random

    cfg = make_config()
    articles = [128] * 500 + [90, 120]  # BBC: almost every article fills max_length
    quotes = [random.Random(i).randint(8, 128) for i in range(500)]  # short texts of varied length
    assert runtime.sampling_strategy(cfg.runtime, articles, 32, 42) == "random"
    assert runtime.sampling_strategy(cfg.runtime, quotes, 32, 42) == "group_by_length"
    assert runtime.sampling_strategy(cfg.runtime, None, 32, 42) == "random"  # packed blocks
    forced = make_config("runtime.group_by_length=false").runtime
    assert runtime.sampling_strategy(forced, quotes, 32, 42) == "random"
    args = runtime.training_arguments(cfg, str(tmp_path), lengths=quotes, per_device_train_batch_size=32)
    assert args.train_sampling_strategy == "group_by_length"


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [("fused", {"fused": True}), ("foreach", {"foreach": True}), ("for_loop", {"foreach": False})],
)
def test_the_optimizer_kernel_is_the_configured_one(kernel, expected):
    import torch

    optimizer_cls, kwargs = runtime.adamw(make_config(f"runtime.optimizer={kernel}").runtime, 1e-4)
    optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(3))], **kwargs)
    assert {key: optimizer.defaults[key] for key in expected} == expected


def test_tf32_follows_repro_and_the_switch():
    import torch

    try:
        runtime.apply_repro(make_config("repro=fast"))
        assert torch.backends.cuda.matmul.allow_tf32
        runtime.apply_repro(make_config("repro=fast", "runtime.tf32=false"))
        assert not torch.backends.cuda.matmul.allow_tf32
        runtime.apply_repro(make_config("repro=strict"))
        assert not torch.backends.cuda.matmul.allow_tf32
        # deterministic algorithms, without PyTorch's NaN fill of every new tensor (7 % of a step)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(False)


def test_freed_memory_stays_in_the_heap_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert runtime.keep_freed_memory()


@pytest.mark.parametrize(
    "bad",
    [
        "runtime.attention=flash",
        "runtime.optimizer=sgd",
        "finetune.attention_dropout=1.5",
        "runtime.threads=0",
        "runtime.dataloader_workers=-1",
    ],
)
def test_a_bad_lever_value_is_one_clear_error(bad):
    key = bad.split("=")[0]
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        make_config(bad)


def test_auto_attention_follows_the_device_and_the_resolved_precision():
    auto = make_config().runtime
    assert kernels.attention_kernel(auto, "cpu", "bf16") == "lean_eager"
    assert kernels.attention_kernel(auto, "cpu", "fp32") == "sdpa"
    assert kernels.attention_kernel(auto, "cuda", "bf16") == "sdpa"
    assert kernels.attention_kernel(make_config("runtime.attention=eager").runtime, "cpu", "fp32") == "eager"


def test_minilm_fine_tunes_with_auto_attention_and_no_attention_dropout(workdir):
    cfg = make_config(*TINY_MINILM, "tracking.enabled=false")
    prepare.run(cfg)
    train.run(cfg)
    labels = json.loads(Path("data/prepared/labels.json").read_text())
    net, _ = finetune.load_classifier(labels, attention_dropout=cfg.finetune.attention_dropout)
    assert net.config.attention_probs_dropout_prob == 0.0
    assert net.config.hidden_dropout_prob == 0.1  # finetune.hidden_dropout: null keeps MiniLM's
    quiet, _ = finetune.load_classifier(labels, hidden_dropout=0.0)
    assert (quiet.config.hidden_dropout_prob, quiet.config.attention_probs_dropout_prob) == (0.0, 0.1)
    kernels.use_attention(net, cfg)
    # auto on a CPU: lean_eager where the run computes in bf16, sdpa in fp32
    assert net.config._attn_implementation == ("lean_eager" if precision.cpu_prefers_bf16() else "sdpa")
    assert kernels.use_attention(net, make_config("runtime.attention=sdpa")) == "sdpa"
    assert net.config._attn_implementation == "sdpa"
    kept, _ = finetune.load_classifier(labels, attention_dropout=None)
    assert kept.config.attention_probs_dropout_prob == 0.1  # MiniLM's own

    finetune.run(cfg)
    saved = json.loads(Path("models/finetuned/config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.0


def test_finetune_logs_real_token_throughput_per_epoch(workdir):
    import mlflow

    cfg = make_config(*TINY_MINILM, "finetune.epochs=2", f"tracking.uri=sqlite:///{workdir}/store.db")
    prepare.run(cfg)
    train.run(cfg)
    finetune.run(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/store.db")
    run = client.search_runs(
        [client.get_experiment_by_name("transferlab").experiment_id],
        filter_string="tags.`transferlab.stage` = 'finetune'",
    )[0]
    history = client.get_metric_history(run.info.run_id, "train_tokens_per_second")
    assert sorted(m.step for m in history) == [1, 2]
    assert all(m.value > 0 for m in history)
    # the kernel the model ran, as use_attention set it (auto: lean_eager only where the CPU runs bf16)
    assert run.data.tags["attention"] == ("lean_eager" if precision.cpu_prefers_bf16() else "sdpa")
    assert run.data.tags["dropout"] == "packed"  # runtime.fast_dropout on a CPU
