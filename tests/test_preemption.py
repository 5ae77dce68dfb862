"""SIGTERM and SIGINT stop fit.py after the current step, with a checkpoint at it.

In-process, the signal is sent (a real ``os.kill`` of this process) as soon as
fit's handler is installed, so the run stops after its first step: the step
is known in advance. As programs (slow), the signal comes mid-training from
outside: to one process with one replica or two (two logical CPUs), or to one
worker of a two-worker job.
"""

import json
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import time

import pytest

from keras_resnext.training import run_control

from helpers import ENV
from helpers import FIT
from helpers import TWO_CPUS
from helpers import free_ports
from helpers import latest_checkpoint_step

FIT_MAIN = runpy.run_path(FIT)["main"]
STOP_LINE = re.compile(
    r"stopped: (?P<cause>SIGTERM received|SIGINT received|another worker of the job "
    r"received a stop signal); saved checkpoint ckpt-(?P<step>\d+) at global step "
    r"(?P=step) \((?P<where>in|after) epoch (?P<epoch>\d+)/(?P<epochs>\d+)\) in "
    r"(?P<dir>\S+); rerun the same command to resume from step (?P=step)\.")


# What runs here may set the global dtype policy (a recipe's mixed precision): restore it.
pytestmark = pytest.mark.usefixtures("dtype_policy")


def signal_when_handled(signum, timeout=300):
    """Sends ``signum`` to this process once fit's handler for it is installed."""

    def send():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            handler = signal.getsignal(signum)
            if isinstance(getattr(handler, "__self__", None), run_control.StopSignals):
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def stop_line(err):
    """The one stop line of a run's stderr, parsed."""
    lines = [line for line in err.splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 1, err
    match = STOP_LINE.fullmatch(lines[0])
    assert match, lines[0]
    return match


def run_state(model_dir):
    with open(os.path.join(model_dir, "run.json"), encoding="utf-8") as f:
        return json.load(f)


# The in-process test runs in a fresh pytest process of its own: after a long suite in an
# xdist worker (TensorFlow, JAX, PyTorch and OpenVINO state from other files), a real signal
# to the worker crashed it (SIGSEGV) twice, and xdist then hung instead of reporting.
IN_CHILD = "KERAS_RESNEXT_PREEMPTION_CHILD"


def test_sigterm_then_sigint_stop_at_a_step_and_the_rerun_resumes_there(tmp_path):
    """Runs ``in_process_stop_and_resume`` alone in a child pytest (see IN_CHILD)."""
    if os.environ.get(IN_CHILD):
        pytest.skip("the child runs in_process_stop_and_resume itself")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
         "--basetemp", str(tmp_path / "child"),
         f"{os.path.abspath(__file__)}::test_in_process_stop_and_resume"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, IN_CHILD: "1"},
        cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]


def test_in_process_stop_and_resume(tmp_path, capsys):
    """SIGTERM then SIGINT to this very process: fit stops at a known step, resumes there."""
    if not os.environ.get(IN_CHILD):
        pytest.skip("run in a child process by the test above")
    model_dir = str(tmp_path / "run")
    args = ["--strategy", "default", "--model-dir", model_dir, "--batch-size", "16",
            "--steps-per-epoch", "2", "--epochs", "2", "--checkpoint-steps", "100",
            "--val-steps", "1", "--no-export", "--verbose", "0"]
    # What the process had before (pytest-xdist workers ignore SIGINT).
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    # SIGTERM before the first step: that step finishes and is saved, mid-epoch.
    sender = signal_when_handled(signal.SIGTERM)
    assert FIT_MAIN(args) == 143
    sender.join()
    out, err = capsys.readouterr()
    line = stop_line(err)
    assert (line["cause"], line["step"], line["where"], line["epoch"]) == (
        "SIGTERM received", "1", "in", "1")
    assert err.strip() == line.group(0)  # the one line on stderr
    assert latest_checkpoint_step(model_dir) == 1  # not a periodic or epoch checkpoint
    state = run_state(model_dir)
    assert state["status"] == "stopped"
    assert state["stopped"] == {"signal": "SIGTERM", "global_step": 1, "epoch": 1,
                                "epoch_done": False, "checkpoint": "ckpt-1"}
    assert not os.path.exists(os.path.join(model_dir, "run.lock"))
    assert not os.path.exists(os.path.join(model_dir, "history.json"))

    # SIGINT: the rerun resumes at step 1, and its step 2 ends epoch 1, so the
    # epoch is finished (validation, history) before it stops.
    sender = signal_when_handled(signal.SIGINT)
    assert FIT_MAIN(args) == 130
    sender.join()
    out, err = capsys.readouterr()
    assert f"ckpt-1: epoch 1/2, global step 1" in out
    line = stop_line(err)
    assert (line["cause"], line["step"], line["where"], line["epoch"]) == (
        "SIGINT received", "2", "after", "1")
    assert latest_checkpoint_step(model_dir) == 2
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert [h["global_step"] for h in history] == [2]
    assert run_state(model_dir)["stopped"]["epoch_done"] is True

    assert FIT_MAIN(args) == 0
    out, err = capsys.readouterr()
    assert "ckpt-2: epoch 2/2, global step 2" in out
    assert "Trained 2 steps; global step 4, 2 epochs done." in out
    assert run_state(model_dir)["status"] == "finished"
    assert [h["global_step"] for h in json.load(
        open(os.path.join(model_dir, "history.json")))] == [2, 4]
    assert not os.path.exists(os.path.join(model_dir, "run.lock"))
    # The handlers are fit's only while it runs.
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def wait_for(condition, procs, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_fit_program_stops_mid_training_and_resumes_at_that_step(tmp_path, signum):
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, FIT, "--strategy", "mirrored", "--model-dir", model_dir,
           "--batch-size", "16", "--steps-per-epoch", "40", "--epochs", "1",
           "--checkpoint-steps", "4", "--val-steps", "1", "--no-export", "--verbose", "0"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: (latest_checkpoint_step(model_dir) or 0) >= 4, [proc])
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err[-3000:]
    line = stop_line(err)
    assert line["cause"] == f"{signal.Signals(signum).name} received"
    step = int(line["step"])
    assert step > 4 and latest_checkpoint_step(model_dir) == step
    assert run_state(model_dir)["stopped"]["global_step"] == step

    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ckpt-{step}: epoch 1/1, global step {step}" in out.stdout
    assert f"Trained {40 - step} steps; global step 40" in out.stdout


@pytest.mark.slow
def test_two_replicas_stop_together_and_resume(tmp_path):
    """MirroredStrategy on two logical CPUs: the stop flag is reduced over replicas."""
    model_dir = str(tmp_path / "run")
    args = ["--strategy", "mirrored", "--model-dir", model_dir, "--batch-size", "16",
            "--steps-per-epoch", "40", "--epochs", "1", "--checkpoint-steps", "4",
            "--val-steps", "1", "--no-export", "--verbose", "0"]
    cmd = [sys.executable, "-c", TWO_CPUS, FIT, json.dumps([args])]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: (latest_checkpoint_step(model_dir) or 0) >= 4, [proc])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "CODES [143]" in out, err[-3000:]
    step = int(stop_line(err)["step"])
    assert run_state(model_dir)["replicas"] == 2
    assert latest_checkpoint_step(model_dir) == step > 4

    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert "CODES [0]" in out.stdout, out.stderr[-3000:]
    assert f"ckpt-{step}: epoch 1/1, global step {step}" in out.stdout
    assert f"Trained {40 - step} steps; global step 40" in out.stdout


@pytest.mark.slow
def test_multi_worker_all_workers_stop_at_the_same_step_and_resume_there(tmp_path):
    """SIGTERM to the second worker only: both stop after the same step."""
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    model_dir = str(tmp_path / "run")
    worker_dir = os.path.join(model_dir, "workers", "worker-1")
    cmd = [sys.executable, FIT, "--strategy", "multi_worker_mirrored", "--model-dir",
           model_dir, "--batch-size", "16", "--steps-per-epoch", "30", "--epochs", "1",
           "--checkpoint-steps", "3", "--val-steps", "1", "--no-export", "--verbose", "0"]

    def start():
        return [subprocess.Popen(cmd, env=dict(ENV, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]

    procs = start()
    try:
        wait_for(lambda: (latest_checkpoint_step(model_dir) or 0) >= 3, procs)
        procs[1].send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = [stop_line(err) for _, err in results]
    assert [p.returncode for p in procs] == [143, 143], results
    assert lines[0]["cause"] == "another worker of the job received a stop signal"
    assert lines[1]["cause"] == "SIGTERM received"
    step = int(lines[0]["step"])
    assert int(lines[1]["step"]) == step > 3
    assert latest_checkpoint_step(model_dir) == step == latest_checkpoint_step(worker_dir)
    for directory in (model_dir, worker_dir):
        assert not os.path.exists(os.path.join(directory, "run.lock"))

    procs = start()
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert f"global step {step}" in out and f"Trained {30 - step} steps" in out
