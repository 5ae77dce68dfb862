"""One writer per run: the run directory's lock (``run_control.RunLock``).

The holders are real processes: a second Python process that takes the lock
(and waits on its stdin), killed with SIGKILL for the stale case.
"""

import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys

import keras
import pytest

from keras_resnext.training import run_control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT_MAIN = runpy.run_path(os.path.join(ROOT, "training", "fit.py"))["main"]
# A process that holds the lock of argv[1] until its stdin closes. run_control.py
# is loaded from its file: it needs only the standard library (no TensorFlow start).
HOLDER = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_control", sys.argv[2])
run_control = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_control)
with run_control.RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""
RUN_CONTROL = os.path.join(ROOT, "keras_resnext", "training", "run_control.py")


@pytest.fixture
def holder(tmp_path):
    """Starts a process holding the lock of a directory; yields ``start(dir)``."""
    procs = []

    def start(directory):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), RUN_CONTROL],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# What runs here may set the global dtype policy (a recipe's mixed precision): restore it.
pytestmark = pytest.mark.usefixtures("dtype_policy")


def test_a_second_fit_on_a_locked_run_is_refused_in_one_line(tmp_path, holder, capsys):
    model_dir = tmp_path / "run"
    first = holder(model_dir)
    code = FIT_MAIN(["--model-dir", str(model_dir), "--strategy", "default", "--verbose", "0",
                     "--steps-per-epoch", "1", "--epochs", "1", "--no-export"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith(f"error: {str(model_dir)!r} is in use by another run: process "
                          f"{first.pid} on {socket.gethostname()} (since "), err
    assert err.count("\n") == 1 and f"holds {model_dir / 'run.lock'}." in err
    assert sorted(os.listdir(model_dir)) == ["run.lock"]  # nothing written
    assert json.loads((model_dir / "run.lock").read_text())["pid"] == first.pid

    first.stdin.close()  # the holder ends: its lock file goes with it
    assert first.wait(timeout=60) == 0
    assert not model_dir.exists()  # it created the folder, and it was empty


def test_the_stale_lock_of_a_killed_process_is_taken_over(tmp_path, holder, caplog):
    first = holder(tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait()
    lock = tmp_path / "run.lock"
    assert json.loads(lock.read_text())["pid"] == first.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="keras_resnext"):
        with run_control.RunLock(str(tmp_path)):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
            with pytest.raises(FileExistsError, match=rf"process {os.getpid()} on "):
                run_control.RunLock(str(tmp_path)).__enter__()  # held: also in-process
    [record] = [r for r in caplog.records if "stale lock" in r.getMessage()]
    assert f"of process {first.pid} on {socket.gethostname()}" in record.getMessage()
    assert not lock.exists()


def test_the_lock_is_released_on_every_exit_path(tmp_path):
    run_dir = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError, match="inside"):
        with run_control.RunLock(str(run_dir)):
            assert (run_dir / "run.lock").exists()
            raise RuntimeError("inside")
    assert not (tmp_path / "a").exists()  # created here and left empty: removed
    with run_control.RunLock(str(run_dir)):
        (run_dir / "result.txt").write_text("kept")
    assert sorted(os.listdir(run_dir)) == ["result.txt"]


def test_fit_releases_the_lock_when_it_fails_after_taking_it(tmp_path, capsys):
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    weights = str(tmp_path / "other.weights.h5")
    other.save_weights(weights)
    model_dir = tmp_path / "run"
    code = FIT_MAIN(["--model-dir", str(model_dir), "--strategy", "default", "--verbose", "0",
                     "--steps-per-epoch", "1", "--epochs", "1", "--no-export",
                     "--weights", weights])
    err = capsys.readouterr().err
    assert code == 2 and "Cannot load the Keras weights file" in err, err
    assert not model_dir.exists()  # lock released, empty folder removed
