"""The GPU path, for a machine with CUDA: `pytest -m gpu` validates it (skipped where no CUDA device
is visible, as on the CPU machines CI runs on). The tiny pipeline on the GPU with the precision
`auto` picks there, bf16 autocast, DDP over NCCL on every visible GPU, and a short throughput / MFU
figure against the GPU's measured bf16 matmul peak."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import copy_tiny, sh

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (run pytest -m gpu on one)"
    ),
]
ON_GPU = ["experiment=tiny", "device=cuda", "precision=auto"]


def test_auto_precision_picks_the_gpus_fast_type():
    from transferlab.training.precision import resolve_precision

    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", "cuda") == expected


def test_bf16_autocast_runs_on_the_gpu():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    a = torch.randn(256, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        product = a @ a
    assert product.dtype == torch.bfloat16 and torch.isfinite(product.float()).all()


def test_the_tiny_pipeline_runs_on_the_gpu(tiny_repo: Path, tmp_path: Path):
    repo = tmp_path / "project"
    copy_tiny(tiny_repo, repo)
    sh("transferlab", "compose", *ON_GPU, cwd=repo)
    sh("dvc", "repro", cwd=repo)
    rows = (
        sqlite3.connect(repo / "mlflow.db")
        .execute(
            "select r.name, t.key, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key in ('device', 'precision') and (select value from tags where run_uuid = r.run_uuid "
            "and key = 'transferlab.stage') = 'finetune'"
        )
        .fetchall()
    )
    tags = {key: value for _, key, value in rows}
    assert tags["device"] == "cuda" and tags["precision"] in ("bf16", "fp16")
    assert json.loads((repo / "metrics/evaluate.json").read_text())["test_accuracy"] >= 0


def test_ddp_over_nccl_on_every_visible_gpu(tiny_repo: Path, tmp_path: Path):
    gpus = torch.cuda.device_count()
    repo = tmp_path / "project"
    copy_tiny(tiny_repo, repo)
    sh("transferlab", "compose", *ON_GPU, "model.dropout=0.0", f"finetune.batch_size={8 * gpus}", cwd=repo)
    sh("torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "transferlab.cli", "finetune", cwd=repo)
    assert (repo / "models/finetuned/model.safetensors").is_file()


def test_throughput_and_mfu_against_the_gpus_bf16_peak(capsys):
    """A figure to read, not a timed target: MiniLM-sized training steps, and their model FLOPs as
    a share of this GPU's measured bf16 (or fp16) matmul peak."""
    from transferlab.training.precision import resolve_precision

    dtype = torch.bfloat16 if resolve_precision("auto", "cuda") == "bf16" else torch.float16
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    torch.cuda.synchronize()
    started, loops = time.perf_counter(), 0
    while time.perf_counter() - started < 2:
        a @ a
        loops += 1
    torch.cuda.synchronize()
    peak = 2 * 8192**3 * loops / (time.perf_counter() - started)

    layer = torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, batch_first=True).cuda()
    model = torch.nn.TransformerEncoder(layer, 6).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    batch = torch.randn(64, 128, 384, device="cuda")
    for step in range(23):
        if step == 3:  # after warm-up
            torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype):
            loss = model(batch).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.cuda.synchronize()
    tokens_per_second = 20 * 64 * 128 / (time.perf_counter() - started)
    per_layer = 4 * 384 * 384 + 2 * 384 * 1536
    flops_per_token = 6 * 6 * per_layer + 12 * 6 * 384 * 128
    mfu = tokens_per_second * flops_per_token / peak
    with capsys.disabled():
        print(
            f"\nGPU {torch.cuda.get_device_name()}: {dtype} matmul peak {peak / 1e12:.1f} TFLOP/s, "
            f"{tokens_per_second:,.0f} tokens/s, MFU {mfu:.1%}"
        )
    assert 0 < mfu < 1
