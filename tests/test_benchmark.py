"""The benchmark's candidates compute the same function; its report is well-formed."""

import keras
import numpy as np

import keras_resnext
from keras_resnext import benchmark

from conftest import TINY_SPEC, random_images


def test_keras_grouped_conv_clone_is_the_same_model():
    ours = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    theirs = benchmark.with_keras_grouped_conv(ours)
    theirs.set_weights(ours.get_weights())
    grouped = [l for l in theirs.layers if getattr(l, "groups", 1) > 1]
    assert grouped and all(type(l) is keras.layers.Conv2D for l in grouped)
    x = random_images(2, 32)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-6)


def test_markdown_and_write(tmp_path):
    report = {
        "machine": benchmark.machine_description(),
        "settings": {"size": 32, "batch": 2, "rounds": 1, "warmup": 1, "steps": 1,
                     "slow_steps": 1, "dtype": "float32", "xla": "off"},
        "results": [{"model": "a", "params": 10, "train_img_per_s": 2.0,
                     "train_vs_resnet50": 1.0}],
        "train_speedup_vs_keras_grouped_conv": 12.5,
    }
    benchmark.write(report, str(tmp_path))
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| a | 10 | 2.00 | 1.00x |" in text
    assert "12.5x faster" in text
    assert text.startswith("# Benchmarks")
    machine = report["machine"]
    assert set(machine["cpu_flags"]) <= {f for f in open("/proc/cpuinfo").read().split()}
    assert f"oneDNN {'on' if machine['onednn_enabled'] else 'off'}" in text
    state = "on" if report["machine"]["onednn_enabled"] else "off"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "benchmarks.md", f"benchmarks_onednn_{state}.json"]
    # A run under the other oneDNN state is kept beside it, both in the markdown.
    other = {**report, "machine": {**report["machine"],
                                   "onednn_enabled": not report["machine"]["onednn_enabled"]}}
    benchmark.write(other, str(tmp_path))
    text = (tmp_path / "benchmarks.md").read_text()
    assert text.count("## oneDNN ") == 2 and "## oneDNN off" in text and "## oneDNN on" in text
    assert len(list(tmp_path.glob("benchmarks_onednn_*.json"))) == 2
