"""The multi-node examples in deploy/, which no test can run here (no cluster): the Slurm batch script
passes `bash -n` with its #SBATCH lines where Slurm reads them, the Kubernetes PyTorchJob parses as
YAML, each runs the stage through torchrun as docs/reliability.md says, and each says it is untested."""

from __future__ import annotations

import subprocess

import yaml

from conftest import REPO

SBATCH = REPO / "deploy/slurm/finetune-2nodes.sbatch"
PYTORCHJOB = REPO / "deploy/kubernetes/finetune-2nodes.yaml"


def test_the_slurm_batch_script_parses():
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = SBATCH.read_text().splitlines()
    assert any("NOT TESTED HERE" in line for line in lines)
    # sbatch reads #SBATCH lines only before the first command.
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert [line for line in lines[first_command:] if line.startswith("#SBATCH")] == []
    script = SBATCH.read_text()
    for part in (
        "srun",
        'torchrun --nnodes="$SLURM_NNODES"',
        "--rdzv-backend=c10d",
        "--max-restarts=",
        '-m transferlab.cli "$stage"',
        "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
        "export MLFLOW_TRACKING_URI",
    ):
        assert part in script, part


def test_the_kubernetes_job_parses():
    text = PYTORCHJOB.read_text()
    assert "NOT TESTED HERE" in text
    job = yaml.safe_load(text)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["spec"]["elasticPolicy"]["rdzvBackend"] == "c10d"
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    [container] = worker["template"]["spec"]["containers"]
    assert container["name"] == "pytorch"  # the name the operator configures
    assert container["command"][-3:] == ["-m", "transferlab.cli", "finetune"]
    assert container["command"][0].endswith("torchrun")
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
    claims = [
        volume["persistentVolumeClaim"]["claimName"]
        for volume in worker["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    ]
    assert claims == ["transferlab-project"]
