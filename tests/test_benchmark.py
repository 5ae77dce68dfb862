"""The benchmark's candidates compute the same function; its report is well-formed; it runs on
every backend (JAX and PyTorch in subprocesses, without TensorFlow)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import benchmark

from helpers import TINY_SPEC, random_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(ROOT, "applications", "benchmark.py")


def test_keras_grouped_conv_clone_is_the_same_model():
    ours = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    theirs = benchmark.with_keras_grouped_conv(ours)
    theirs.set_weights(ours.get_weights())
    grouped = [l for l in theirs.layers if getattr(l, "groups", 1) > 1]
    assert grouped and all(type(l) is keras.layers.Conv2D for l in grouped)
    x = random_images(2, 32)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-6)


def test_folded_candidates_follow_each_of_our_models():
    """``--folded`` adds a folded copy after each of our models (not the Keras grouped
    copy), built by ``fold_batch_norm``: no BatchNormalization left."""
    folded = benchmark.folded_label("rexnet_100")
    assert benchmark.candidate_labels(("resnet50", "rexnet_100"), folded=True) == [
        benchmark.BASELINE, benchmark.OUR_RESNET, benchmark.folded_label(benchmark.OUR_RESNET),
        benchmark.OURS, benchmark.FOLDED, benchmark.KERAS_GROUPED, "rexnet_100", folded]
    assert benchmark.candidate_labels(("rexnet_100",), keras_grouped=False) == [
        benchmark.BASELINE, benchmark.OURS, "rexnet_100"]
    model = benchmark.build_candidate(folded, 32, classes=4)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "FoldedBatchNorm" in kinds and "BatchNormalization" not in kinds


def fake_report(machine=None, **settings):
    """A report as ``benchmark.run`` returns it, with made-up numbers."""
    return {
        "machine": {**benchmark.machine_description(), **(machine or {})},
        "settings": {"size": 32, "batch": 16, "rounds": 1, "warmup": 1, "steps": 1,
                     "slow_steps": 1, "latency_steps": 1, "dtype": "float32",
                     "compiled": "test", **settings},
        "results": [{"model": "a", "params": 10, "train_img_per_s": 2.0,
                     "train_vs_resnet50": 1.0, "latency_call_ms": 12.34,
                     "latency_call_vs_resnet50": 0.5, "train_peak_rss_mb": 1000.4,
                     "train_rss_vs_resnet50": 1.25}],
        "train_speedup_vs_keras_grouped_conv": 12.5,
    }


def test_markdown_and_write(tmp_path):
    report = fake_report()
    benchmark.write(report, str(tmp_path))
    text = (tmp_path / "benchmarks.md").read_text()
    # Only the measured columns, each value with its ratio to ResNet-50.
    assert "| model | params | train img/s | batch-1 call ms | train peak RSS MiB |" in text
    assert "| a | 10 | 2.00 (1.00x) | 12.3 (0.50x) | 1000 (1.25x) |" in text
    assert "12.5x faster" in text
    assert text.startswith("# Benchmarks") and "## GPUs" in text
    machine = report["machine"]
    assert machine["backend"] == "tensorflow"
    assert set(machine["cpu_flags"]) <= {f for f in open("/proc/cpuinfo").read().split()}
    assert f"## TensorFlow, CPU, oneDNN {'on' if machine['onednn_enabled'] else 'off'}" in text
    state = "on" if machine["onednn_enabled"] else "off"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "benchmarks.md", f"benchmarks_onednn_{state}.json"]
    # Runs under the other oneDNN state and other backends are kept beside it, in order.
    other = fake_report({"onednn_enabled": not machine["onednn_enabled"]})
    benchmark.write(other, str(tmp_path))
    benchmark.write(fake_report({"backend": "torch", "torch": "2.x", "onednn_enabled": True}),
                    str(tmp_path))
    benchmark.write(fake_report({"backend": "jax", "jax": "0.x", "onednn_enabled": None}),
                    str(tmp_path))
    text = (tmp_path / "benchmarks.md").read_text()
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["## TensorFlow, CPU, oneDNN off (TF_ENABLE_ONEDNN_OPTS="
                      f"{machine['onednn_setting']})",
                      f"## TensorFlow, CPU, oneDNN on (TF_ENABLE_ONEDNN_OPTS="
                      f"{machine['onednn_setting']})",
                      "## JAX, CPU", "## PyTorch, CPU", "## GPUs"]
    assert "PyTorch oneDNN (mkldnn) on" in text
    assert len(list(tmp_path.glob("benchmarks_*.json"))) == 4


def test_markdown_reads_reports_written_before_backends():
    """The JSONs in docs/ from before this change (no backend, no latency) still render."""
    report = fake_report(xla="off")
    for key in ("backend", "device", "accelerators"):
        report["machine"].pop(key)
    for key in ("compiled", "latency_steps"):
        report["settings"].pop(key)
    text = benchmark.markdown(report)
    assert text.startswith("## TensorFlow, CPU, oneDNN") and "tf.function, XLA off" in text


def test_heading_names_a_run_without_training():
    report = fake_report(xla="off")
    assert not benchmark.heading(report).endswith("inference only")
    for row in report["results"]:
        row.pop("train_img_per_s", None)
    assert benchmark.heading(report).endswith(", inference only")


@pytest.mark.parametrize("machine,settings,name", [
    ({"backend": "tensorflow", "onednn_enabled": False}, {}, "benchmarks_onednn_off.json"),
    ({"backend": "jax"}, {}, "benchmarks_jax.json"),
    ({"backend": "torch", "device": "gpu"}, {"dtype": "mixed_bfloat16", "batch": 128},
     "benchmarks_torch_gpu_mixed_bfloat16_b128.json"),
])
def test_report_path_per_backend_device_policy_and_batch(machine, settings, name):
    report = fake_report(machine, **settings)
    assert benchmark.report_path("d", report) == os.path.join("d", name)


def test_run_refuses_another_backend_and_bad_settings():
    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(ValueError, match=f"KERAS_BACKEND={other} before keras is imported"):
        benchmark.run(backend=other)
    with pytest.raises(ValueError, match="`policy` must be one of"):
        benchmark.run(policy="mixed_float16")
    with pytest.raises(ValueError, match=r"`modes` must be some of .* Received: \['fit'\]"):
        benchmark.run(modes=("fit",))


def test_cli_names_a_backend_that_is_not_installed(tmp_path):
    code = ("import runpy, sys; sys.modules['jax'] = None; "
            f"sys.argv = ['benchmark.py', '--backend', 'jax', '--out', {str(tmp_path)!r}]; "
            f"runpy.run_path({BENCHMARK!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --backend jax: jax is not installed "
                                   "(pip install jax)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_cli_runs_on_each_backend_without_tensorflow(backend, tmp_path):
    """Throughput, both batch-1 latencies and peak RSS, tiny sizes; TensorFlow hidden."""
    args = ["--backend", backend, "--size", "32", "--batch", "2", "--rounds", "1",
            "--steps", "1", "--latency-steps", "1", "--models", "--skip-keras-grouped",
            "--folded", "--out", str(tmp_path)]
    code = ("import runpy, sys; sys.modules['tensorflow'] = None; "
            f"sys.argv = ['benchmark.py', *{args!r}]; "
            f"sys.exit(runpy.run_path({BENCHMARK!r}, run_name='__main__')['main']())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / f"benchmarks_{backend}_b2.json").read_text())
    assert report["machine"]["backend"] == backend
    assert [r["model"] for r in report["results"]] == [benchmark.BASELINE, benchmark.OURS,
                                                        benchmark.FOLDED]
    folded = report["results"].pop()  # inference only: no training step, no memory
    assert "train_img_per_s" not in folded and "infer_peak_rss_mb" not in folded
    assert folded["infer_img_per_s"] > 0 and folded["latency_call_ms"] > 0
    for row in report["results"]:
        for key in ("train_img_per_s", "infer_img_per_s", "latency_call_ms",
                    "latency_predict_ms", "latency_predict_on_batch_ms"):
            assert row[key] > 0, (row["model"], key)
        # The model's step needs memory on top of the built model, and its process
        # holds the framework: hundreds of MiB.
        assert 100 < row["built_rss_mb"] <= row["infer_peak_rss_mb"]
        assert row["train_peak_rss_mb"] > 100
    base = report["results"][0]
    assert base["train_vs_resnet50"] == 1.0 and base["train_rss_vs_resnet50"] == 1.0
    title = {"jax": "## JAX, CPU", "torch": "## PyTorch, CPU"}[backend]
    assert title in (tmp_path / "benchmarks.md").read_text()
