"""Slurm for real: a one-machine cluster (Debian's slurm-wlm: munged, slurmctld and slurmd on
127.0.0.1, installed with apt-get when missing) runs a Hydra sweep through `hydra/launcher=slurm`
(submitit, sbatch job arrays). One job is interrupted by Slurm's time-limit signal after its first
fine-tuning checkpoint: submitit requeues it, and it resumes from the checkpoint into the same
MLflow run. What this proves and how to point the launcher at a real cluster: docs/cluster.md."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_project, free_port, store, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
SBIN = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/bin", os.environ.get("PATH", "")])
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


def binary(name: str) -> str | None:
    return shutil.which(name, path=SBIN)


def install_slurm() -> None:
    """Debian's slurm-wlm daemons and clients, with apt-get when missing (skip, saying why, if not)."""
    if all(binary(name) for name in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        pytest.skip(f"no Slurm, and only root can install it: apt-get install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    installed = subprocess.run(command, capture_output=True, text=True, env=env)
    if installed.returncode != 0:  # stale or missing package lists
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, env=env)
        installed = subprocess.run(command, capture_output=True, text=True, env=env)
    if installed.returncode != 0 or not binary("slurmctld"):
        pytest.skip(
            f"no Slurm, and apt-get could not install {' '.join(PACKAGES)}: {installed.stderr[-300:]}"
        )


def slurm_conf(folder: Path, node: str) -> str:
    """A one-node cluster whose state, logs and sockets all live in `folder`. cred_expire also sets how
    long a requeued job waits before it may start again (default 120 s); sched_interval=1 lets the
    scheduler start it within a second then. No accounting: submitit's watcher calls sacct, which says
    so, and submitit falls back to the result file each job writes (docs/cluster.md)."""
    return "\n".join(
        [
            "ClusterName=transferlab",
            f"SlurmctldHost={node}(127.0.0.1)",
            "SlurmUser=root",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={folder / 'munge.sock'},cred_expire=5",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            *(
                f"{daemon}{kind}File={folder / daemon.lower()}.{ext}"
                for daemon in ("Slurmctld", "Slurmd")
                for kind, ext in (("Pid", "pid"), ("Log", "log"))
            ),
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobRequeue=1",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A running one-node Slurm cluster for the session: the environment its clients need
    (SLURM_CONF, sbin on PATH). munged, slurmctld and slurmd run in the foreground as our children
    and are stopped, after every job is cancelled, when the session ends (or pytest dies)."""
    install_slurm()
    if os.geteuid() != 0:
        pytest.skip("slurmd runs jobs as their user and needs root")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, socket.gethostname().split(".")[0]))
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": SBIN}
    daemons: list[subprocess.Popen] = []

    def start(*command: str) -> None:
        with open(folder / f"{Path(command[0]).name}.out", "w") as out:
            daemons.append(
                subprocess.Popen(
                    command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
                )
            )

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))

    try:
        start(
            binary("munged"),
            "--foreground",
            "--force",
            f"--socket={folder / 'munge.sock'}",
            f"--key-file={key}",
            f"--pid-file={folder / 'munged.pid'}",
            f"--log-file={folder / 'munged.log'}",
            f"--seed-file={folder / 'munge.seed'}",
        )
        wait_for(lambda: (folder / "munge.sock").exists(), 20, "munged did not open its socket", logs)
        start(binary("slurmctld"), "-D", "-f", str(conf))
        start(binary("slurmd"), "-D", "-f", str(conf))
        wait_for(
            lambda: (
                subprocess.run(
                    ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
                ).stdout.strip()
                == "idle"
            ),
            60,
            "the node is not idle",
            logs,
        )
        yield {"SLURM_CONF": str(conf), "PATH": f"{tool_env()['PATH']}{os.pathsep}{SBIN}"}
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        try:
            wait_for(
                lambda: (
                    not subprocess.run(
                        ["squeue", "-h"], env=env, capture_output=True, text=True
                    ).stdout.strip()
                ),
                60,
                "jobs left",
                logs,
            )
        finally:
            for daemon in reversed(daemons):  # slurmd, slurmctld, munged
                daemon.terminate()
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()


def die_with_parent() -> None:
    """In a daemon before exec: SIGTERM when pytest dies, even killed (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def wait_for(condition, seconds: float, what: str, logs=lambda: "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {seconds} s\n{logs()}")
        time.sleep(0.2)


def job_of_stage_run(repo: Path, run_id: str) -> str:
    """hydra.job.num of the job run above a stage run (straight from the sqlite store: fast)."""
    with sqlite3.connect(repo / "mlflow.db", timeout=30) as db:
        query = "select value from tags where run_uuid = ? and key = ?"
        [(parent,)] = db.execute(query, (run_id, "mlflow.parentRunId")).fetchall()
        [(number,)] = db.execute(query, (parent, "hydra.job.num")).fetchall()
    return number


# Each job: 1 CPU, no GPU request, no memory request, a 10-minute limit; a checkpoint every 2 steps.
SWEEP = [
    "experiment=tiny",
    "finetune.backbone_lr=1e-3,2e-3",
    "finetune.epochs=2",
    "finetune.batch_size=8",
    "checkpoint.every_steps=2",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=10",
    "hydra.sweep.dir=multirun/slurm",
]


def test_a_sweep_runs_as_slurm_jobs_and_a_requeued_job_resumes_into_its_run(slurm, tmp_path):
    repo = copy_project(tmp_path / "project")
    env = tool_env(**slurm)
    squeue = ["squeue", "-h", "-r", "-o", "%i %T"]  # -r: one line per array task
    output = tmp_path / "sweep.log"
    with output.open("w") as out:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "transferlab", "-m", *SWEEP],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # The first complete fine-tuning checkpoint of either job: interrupt that job as Slurm does
        # signal_delay_s before its time limit (SIGUSR2 to the job's processes).
        markers = str(repo / ".cache/stages/finetune/.*.checkpoints/finetune/checkpoint-*/transferlab.json")
        deadline = time.monotonic() + 240
        while not (found := glob.glob(markers)):
            assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoint while the sweep ran"
            time.sleep(0.02)
        run_id = json.loads(Path(found[0]).read_text())["run_id"]
        number = job_of_stage_run(repo, run_id)
        queue = dict(
            line.split()
            for line in subprocess.run(
                squeue, env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()
        )
        [task] = [task for task in queue if task.endswith(f"_{number}")]
        array = task.split("_")[0]
        assert queue[task] == "RUNNING" and all(t.startswith(f"{array}_") for t in queue), queue
        subprocess.run(["scancel", "--signal=USR2", task], env=env, check=True)
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, output.read_text()[-6000:]

    # Through sbatch: one job array with the launcher's settings, a log folder per task.
    folder = repo / "multirun/slurm/.submitit"
    script = (folder / array / f"{array}_submission.sh").read_text()
    for line in (
        "--partition=debug",
        "--array=0-1%2",
        "--cpus-per-task=1",
        "--time=10",
        "--requeue",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}\n" in script, script
    assert "--gpus-per-node" not in script and "--mem" not in script
    assert sorted(p.name for p in folder.glob(f"{array}_*/*_result.pkl")) == [
        f"{array}_0_0_result.pkl",
        f"{array}_1_0_result.pkl",
    ]
    shown = subprocess.run(["scontrol", "show", "job", task], env=env, capture_output=True, text=True).stdout
    assert "Restarts=1" in shown and "Requeue=1" in shown, shown

    # Interrupted, requeued by submitit, run again by Slurm, resumed from the checkpoint.
    log = (folder / task / f"{task}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in log and f"Requeued job {task}" in log, log[-4000:]
    assert log.count("Starting with JobEnvironment") == 2
    resumed = re.search(r"finetune: resuming from \S+/checkpoint-(\d+) \(step \d+\)", log)
    assert resumed and int(resumed.group(1)) >= 2, log[-4000:]
    assert f"MLflow run {run_id} (finetune, resumed)" in log

    # MLflow: one sweep run, both jobs FINISHED under it, one FINISHED finetune run per job.
    client, experiment = store(repo)

    def search(where: str) -> list:
        return sorted(client.search_runs([experiment], where), key=lambda run: run.info.start_time)

    [parent] = search("tags.`transferlab.stage` = 'sweep'")
    assert parent.info.status == "FINISHED" and "SlurmLauncher" in parent.data.tags["sweep.launcher"]
    jobs = search(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    finished = [job for job in jobs if job.info.status == "FINISHED"]
    assert sorted(job.data.tags["hydra.job.num"] for job in finished) == ["0", "1"]
    assert len({job.data.tags["sweep.overrides"] for job in finished}) == 2
    finetunes = search("tags.`transferlab.stage` = 'finetune'")
    assert [run.info.status for run in finetunes] == ["FINISHED", "FINISHED"]  # not a third one
    [again] = [run for run in finetunes if run.info.run_id == run_id]
    assert again.data.tags["checkpoint.resumed_from"] == f"checkpoint-{resumed.group(1)}"
    [owner] = [job for job in finished if job.data.tags["hydra.job.num"] == number]
    assert again.data.tags["mlflow.parentRunId"] == owner.info.run_id
    # The requeued attempt carried on in the job run the interrupted one opened: no third job run.
    assert len(jobs) == 2, [(job.data.tags["hydra.job.num"], job.info.status) for job in jobs]
    assert not glob.glob(str(repo / ".cache/stages/*/.*.checkpoints")), "checkpoints removed after success"
