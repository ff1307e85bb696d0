"""Ctrl-C and the tracking store: a KeyboardInterrupt must not cut a database transaction, or the
runs closed on the way out wait for a lock that nothing releases and stay RUNNING."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Real MLflow on sqlite: open a run, log in bursts (a training loop's logging), send SIGINT at a
# random moment, then close the run as FAILED as the stages do while the KeyboardInterrupt unwinds.
# With Python's own handler a Ctrl-C that lands in a write left the store locked in about one
# round of ten: the close waited sqlite's 20 s busy timeout, failed, and the run stayed RUNNING.
MLFLOW_ROUNDS = """
import json, os, random, signal, sys, threading, time
import mlflow
from transferlab import interrupts

interrupts.install()
mlflow.set_tracking_uri("sqlite:///mlflow.db")
client = mlflow.MlflowClient()
experiment = mlflow.set_experiment("ctrl-c").experiment_id
random.seed(0)
report = {"delays": [], "closes": [], "statuses": []}
for round_ in range(int(sys.argv[1])):
    interrupts.interrupts.clear()
    run_id = client.create_run(experiment).info.run_id
    sent = []
    def ctrl_c():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    try:  # the timer too: on a busy machine it may fire before start() returns
        threading.Timer(random.uniform(0.0005, 0.05), ctrl_c).start()
        for step in range(100_000):
            client.log_metric(run_id, "loss", 1 / (step + 1), step=step)
            client.set_tag(run_id, "step", str(step))
            if step % 5 == 4:
                time.sleep(0.01)  # the training step between two logging calls
    except KeyboardInterrupt:
        started = time.monotonic()
        report["delays"].append(started - sent[0])
        try:
            client.set_terminated(run_id, "FAILED")
        finally:
            report["closes"].append(time.monotonic() - started)
    report["statuses"].append(client.get_run(run_id).info.status)
print(json.dumps(report))
"""


def test_a_ctrl_c_during_mlflow_logging_leaves_no_run_open(tmp_path: Path):
    rounds = 60
    result = subprocess.run(
        [sys.executable, "-c", MLFLOW_ROUNDS, str(rounds)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["statuses"] == ["FAILED"] * rounds
    assert max(report["closes"]) < 5, "a close waited for a lock the interrupted write kept"
    assert max(report["delays"]) < 2, "the Ctrl-C waited too long for the write to end"


# A statement SQLAlchemy runs for 1.5 s (a listener inside its execute spins, holding the GIL as
# a slow driver call would not even let go of it), with Ctrl-C pressed at 0.2 s and maybe at 0.6 s.
# The listener notes when it finished: a redelivered Ctrl-C may land on any line after the
# statement returns, so nothing printed there would be sure to appear.
SLOW_STATEMENT = """
import os, signal, sys, threading, time
import sqlalchemy
from transferlab import interrupts

interrupts.install()
engine = sqlalchemy.create_engine("sqlite://")
statement_done = None

@sqlalchemy.event.listens_for(engine, "before_cursor_execute")
def slow(*args):
    global statement_done
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        pass
    statement_done = round(time.monotonic() - start, 2)

start = time.monotonic()
try:
    for at in map(float, sys.argv[1:]):
        threading.Timer(at, os.kill, (os.getpid(), signal.SIGINT)).start()
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("select 1"))
        time.sleep(5)
except KeyboardInterrupt:
    print("interrupted", round(time.monotonic() - start, 2), statement_done, flush=True)
"""


def run_slow_statement(tmp_path: Path, *ctrl_c_at: float) -> tuple[float, str]:
    """When the Ctrl-C arrived, and when the statement finished ('None': it was cut)."""
    args = [sys.executable, "-c", SLOW_STATEMENT, *map(str, ctrl_c_at)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    word, interrupted, statement_done = result.stdout.split()
    assert word == "interrupted", result.stdout
    return float(interrupted), statement_done


def test_a_ctrl_c_inside_a_database_call_waits_for_it_to_return(tmp_path: Path):
    interrupted, statement_done = run_slow_statement(tmp_path, 0.2)
    assert statement_done != "None", "the Ctrl-C cut the statement"
    assert float(statement_done) >= 1.5
    assert 0 <= interrupted - float(statement_done) < 1.0, (interrupted, statement_done)


def test_a_second_ctrl_c_is_not_deferred(tmp_path: Path):
    interrupted, statement_done = run_slow_statement(tmp_path, 0.2, 0.6)
    assert statement_done == "None" and interrupted < 1.4, (interrupted, statement_done)


# The garbage collector runs a finalizer (GitPython's Repo.__del__, TemporaryDirectory's
# weakref.finalize) while Ctrl-C arrives. Python prints a KeyboardInterrupt raised in a finalizer as
# "Exception ignored in ..." with a traceback, and drops it: before, a sweep's log got that
# traceback and the interrupted job went on.
CTRL_C_IN_A_FINALIZER = """
import os, signal, sys, time, weakref
from transferlab import interrupts

interrupts.install()

def finalizer():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)
    print("finalizer done", flush=True)

class Deleted:
    def __del__(self):
        finalizer()

class Owner:
    pass

start = time.monotonic()
try:
    if sys.argv[1] == "__del__":
        Deleted()
    else:
        owner = Owner()
        weakref.finalize(owner, finalizer)
        del owner
    time.sleep(5)
except KeyboardInterrupt:
    print("interrupted", round(time.monotonic() - start, 2), flush=True)
"""


@pytest.mark.parametrize("kind", ["__del__", "weakref.finalize"])
def test_a_ctrl_c_inside_a_finalizer_is_raised_after_it(tmp_path: Path, kind: str):
    args = [sys.executable, "-c", CTRL_C_IN_A_FINALIZER, kind]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stdout.split()
    assert lines[:3] == ["finalizer", "done", "interrupted"], lines
    assert float(lines[3]) < 3, lines  # not the 5 s sleep: raised as soon as the finalizer returned


# --- Ctrl-C on the Hydra app and on `transferlab tune`, for real (experiment=tiny) ---------------


def interrupt_when(command: list[str], repo: Path, marker: str, timeout: float = 600, group: bool = False):
    """Start `command` in `repo`, send it SIGINT (to its process group with `group`, as a
    terminal's Ctrl-C; else to the process only, as `kill -INT PID`) once `marker` is in its output;
    return (exit code, seconds from the signal to the exit, stdout and stderr)."""
    import os
    import signal
    import time

    from conftest import tool_env

    out, err = repo / "interrupted.out", repo / "interrupted.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=repo, env=tool_env(), stdout=stdout, stderr=stderr, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while marker not in out.read_text() + err.read_text() and process.poll() is None:
        assert time.monotonic() < deadline, f"no {marker!r} in time:\n{err.read_text()[-3000:]}"
        time.sleep(0.1)
    assert process.poll() is None, f"ended before the interrupt:\n{err.read_text()[-3000:]}"
    sent = time.monotonic()
    (os.killpg if group else os.kill)(process.pid, signal.SIGINT)
    code = process.wait(timeout=180)
    return code, time.monotonic() - sent, out.read_text(), err.read_text()


def test_ctrl_c_ends_a_hydra_sweep_in_one_line_with_exit_code_130(tmp_path: Path):
    """Before: KeyboardInterrupt is no Exception, so sweep.main let it through: Python's ~80-line
    traceback and exit code 1 (the sweep run was closed FAILED all the same)."""
    from conftest import children, copy_project, sweeps

    repo = copy_project(tmp_path / "project")
    grid = "finetune.backbone_lr=1e-3,2e-3,3e-3"
    command = [sys.executable, "-m", "transferlab", "-m", "experiment=tiny", "finetune.epochs=3", grid]
    code, _, _, stderr = interrupt_when(command, repo, "(finetune) in sqlite")  # job 0 fine-tunes
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.endswith("python -m transferlab: interrupted\n")
    [sweep] = sweeps(repo, grid)
    assert sweep.info.status == "FAILED"
    assert "RUNNING" not in {job.info.status for job in children(repo, sweep)}


def test_ctrl_c_to_transferlab_tune_stops_its_workers_and_fails_their_trials(tmp_path: Path):
    """`kill -INT` to the parent only. Before: the parent waited 10 s for workers the signal had not
    reached (they went on starting trials), and each worker printed multiprocessing's traceback."""
    import optuna
    from optuna.trial import TrialState

    from conftest import copy_project

    repo = copy_project(tmp_path / "project")
    command = ["transferlab", "tune", "-j", "2", "experiment=tiny", "finetune.epochs=4", "sweep.trials=20"]
    command += ["hydra.sweeper.study_name=ctrl_c"]
    code, seconds, stdout, stderr = interrupt_when(command, repo, "(finetune) in sqlite")
    assert code == 130, stderr[-3000:]
    assert "Process MainProcess" not in stderr, stderr[-3000:]  # multiprocessing's traceback
    assert "Traceback" not in stderr, stderr[-3000:]  # Optuna's, for each trial the Ctrl-C ended
    assert stderr.splitlines()[-1].startswith("transferlab tune: interrupted")
    assert seconds < 30, seconds
    trials = optuna.load_study(study_name="ctrl_c", storage=f"sqlite:///{repo}/optuna.db").trials
    assert TrialState.FAIL in {t.state for t in trials}  # the running ones
    assert TrialState.RUNNING not in {t.state for t in trials}
    assert len(trials) <= 4, [t.state for t in trials]  # no trial started after the Ctrl-C
