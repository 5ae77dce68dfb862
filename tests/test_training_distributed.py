"""fit.py as a program: two replicas, two workers, kill -9 and resume, the default run."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from helpers import ENV
from helpers import FIT
from helpers import TWO_CPUS
from helpers import free_ports
from helpers import latest_checkpoint_step

SMALL = ["--batch-size", "16", "--steps-per-epoch", "3", "--epochs", "1",
         "--val-steps", "2", "--no-export", "--verbose", "0", "--sync-bn"]


def h5_arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def test_mirrored_two_cpus_equals_one_device(tmp_path):
    runs = [
        ["--strategy", "mirrored", "--model-dir", str(tmp_path / "two")] + SMALL,
        ["--strategy", "one_device", "--model-dir", str(tmp_path / "one")] + SMALL,
        ["--strategy", "mirrored", "--model-dir", str(tmp_path / "odd"),
         "--batch-size", "15"],
    ]
    out = subprocess.run([sys.executable, "-c", TWO_CPUS, FIT, json.dumps(runs)],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert "CODES [0, 0, 2]" in out.stdout, out.stdout + out.stderr[-3000:]
    for run, replicas in (("two", 2), ("one", 1)):  # both logical CPUs in the mirrored run
        assert json.loads((tmp_path / run / "run.json").read_text())["replicas"] == replicas
    assert "divisible by the number of replicas (2). Received: batch_size=15" in out.stderr
    assert not os.path.exists(tmp_path / "odd" / "run.json")
    # Synchronized BN over 2 x 8 images is BN over 16: the same training step.
    two = h5_arrays(tmp_path / "two" / "last.weights.h5")
    one = h5_arrays(tmp_path / "one" / "last.weights.h5")
    assert two.keys() == one.keys() and len(two) > 20
    for name in two:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-3, atol=1e-5, err_msg=name)
    moving_means = [n for n in two if "batch_norm" in n and n.endswith("vars/2")]
    assert moving_means and all(np.abs(two[n]).max() > 0 for n in moving_means)
    h_two = json.load(open(tmp_path / "two" / "history.json"))
    h_one = json.load(open(tmp_path / "one" / "history.json"))
    assert h_two[0]["loss"] == pytest.approx(h_one[0]["loss"], rel=1e-4)


def test_multi_worker_mirrored_two_workers_end_identical(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    model_dir = str(tmp_path / "run")
    procs = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, FIT, "--strategy", "multi_worker_mirrored",
             "--model-dir", model_dir] + SMALL,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
        assert "Trained 3 steps; global step 3" in output
    chief = h5_arrays(os.path.join(model_dir, "last.weights.h5"))
    worker = h5_arrays(os.path.join(model_dir, "workers", "worker-1", "last.weights.h5"))
    assert chief.keys() == worker.keys() and len(chief) > 20
    for name in chief:
        np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert history[0]["val_examples"] == 2 * 2 * 8  # 2 steps x 2 workers x 8 images
    assert not os.path.exists(os.path.join(model_dir, "workers", "worker-1", "history.json"))


def test_sigkill_mid_epoch_then_resume_then_nothing_to_do(tmp_path):
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, FIT, "--strategy", "mirrored", "--model-dir", model_dir,
           "--batch-size", "16", "--steps-per-epoch", "20", "--epochs", "3",
           "--checkpoint-steps", "5", "--val-steps", "3", "--no-export", "--verbose", "0"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while True:  # wait for a checkpoint in the middle of the second epoch
            step = latest_checkpoint_step(model_dir)
            if step is not None and 20 < step < 40:
                break
            assert proc.poll() is None, "fit.py ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = latest_checkpoint_step(model_dir)
    assert 20 < killed_at < 40 and killed_at % 5 == 0
    first_epoch = json.load(open(os.path.join(model_dir, "history.json")))
    assert [h["epoch"] for h in first_epoch] == [0]

    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ckpt-{killed_at}: epoch 2/3, global step {killed_at}" in out.stdout
    assert f"Trained {60 - killed_at} steps; global step 60, 3 epochs done." in out.stdout
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[0] == first_epoch[0]  # the finished epoch was not redone
    assert [h["global_step"] for h in history] == [20, 40, 60]
    assert latest_checkpoint_step(model_dir) == 60
    checkpoints = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))

    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished its 3 epochs; nothing to train" in again.stdout
    assert "Trained" not in again.stdout
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == checkpoints
    assert json.load(open(os.path.join(model_dir, "history.json"))) == history


@pytest.mark.slow
def test_default_run_reaches_95_percent_on_digits(tmp_path):
    model_dir = str(tmp_path / "run")
    out = subprocess.run([sys.executable, FIT, "--strategy", "mirrored",
                          "--model-dir", model_dir, "--verbose", "0"],
                         env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert len(history) == 10
    assert history[-1]["val_top1"] >= 0.95, history[-1]
    assert history[-1]["val_examples"] == 360
    for name in ("best.weights.h5", "last.weights.h5", "learning_curves.png"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0
    export = os.path.join(model_dir, "export", "resnext11_4x4d", "1", "saved_model.pb")
    assert os.path.exists(export)

    from keras_resnext.training import evaluate

    best = evaluate.evaluate("resnext11_4x4d", os.path.join(model_dir, "best.weights.h5"),
                             "digits", batch_size=120)
    assert best["top1"] == pytest.approx(max(h["val_top1"] for h in history), abs=1e-9)
