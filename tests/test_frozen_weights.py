"""TF_ONEDNN_ASSUME_FROZEN_WEIGHTS: faster inference, no training.

With it, TensorFlow's oneDNN kernels keep each layer's weights from its first
call (docs/cpu.md: batch-1 inference ~25% faster). The first test shows what
that does to training in a real TensorFlow (oneDNN on, in a child); the others
that this package's trainer and training benchmark refuse it before any work,
and that the benchmark records it where it times inference.
"""

import json
import os
import subprocess
import sys

import pytest

from keras_resnext import benchmark
from keras_resnext import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "training", "fit.py")
BENCHMARK = os.path.join(ROOT, "applications", "benchmark.py")

# Five SGD steps on a one-conv classifier; prints the losses, as JSON.
TRAIN_A_CONV = """
import json
import numpy as np
import keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.SGD(0.5),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
history = model.fit(x, np.arange(8) % 2, epochs=5, batch_size=8, verbose=0)
print(json.dumps(history.history["loss"]))
"""


def losses_with(frozen):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", cli.FROZEN_WEIGHTS_ENV: frozen}
    proc = subprocess.run([sys.executable, "-c", TRAIN_A_CONV], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_with_it_a_conv_net_does_not_learn():
    trained, frozen = losses_with("0"), losses_with("1")
    assert trained[0] == pytest.approx(frozen[0], rel=1e-5)  # the same first step
    assert trained[-1] < trained[0] - 1e-3
    assert max(frozen) - min(frozen) < 1e-5, frozen


@pytest.mark.parametrize("value", ["1", "true", "TRUE"])
def test_fit_refuses_it_in_one_line_and_writes_nothing(tmp_path, value):
    env = {**os.environ, cli.FROZEN_WEIGHTS_ENV: value}
    model_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, FIT, "--strategy", "default", "--verbose", "0", "--no-export",
         "--model-dir", str(model_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{cli.FROZEN_WEIGHTS_ENV}={value}" in lines[0] and "Unset it" in lines[0]
    assert not model_dir.exists()


def test_zero_or_unset_is_accepted(monkeypatch):
    monkeypatch.delenv(cli.FROZEN_WEIGHTS_ENV, raising=False)
    cli.refuse_frozen_weights("Training")
    monkeypatch.setenv(cli.FROZEN_WEIGHTS_ENV, "0")
    cli.refuse_frozen_weights("Training")


def run_benchmark(out, *args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", cli.FROZEN_WEIGHTS_ENV: "1"}
    return subprocess.run(
        [sys.executable, BENCHMARK, "--size", "32", "--batch", "1", "--rounds", "1",
         "--steps", "1", "--latency-steps", "1", "--models", "--skip-keras-grouped",
         "--no-memory", "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_benchmark_refuses_to_time_training(tmp_path):
    proc = run_benchmark(tmp_path / "out")  # the default modes include "train"
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and cli.FROZEN_WEIGHTS_ENV in lines[0], proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_benchmark_records_it_beside_the_onednn_state(tmp_path):
    proc = run_benchmark(tmp_path, "--modes", "infer", "latency")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")  # not the default run's name: it is kept beside
    assert "_frozen_weights_1" in path.name, path.name
    report = json.loads(path.read_text())
    assert report["machine"]["onednn_frozen_weights"] == "1"
    assert benchmark.heading(report) in (tmp_path / "benchmarks.md").read_text()
    assert f"{cli.FROZEN_WEIGHTS_ENV}=1" in benchmark.heading(report)
