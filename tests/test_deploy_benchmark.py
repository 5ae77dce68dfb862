"""applications/deploy_benchmark.py: every artifact of an export runs in its runtime.

Behaviour only (which runtimes run, that they agree, what is written): the
speeds it prints are for a quiet machine, never asserted.
"""

import json
import os
import runpy

import keras
import pytest

import keras_resnext
from keras_resnext import export as export_lib

from helpers import TINY_SPEC, random_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_deploy_benchmark_times_every_artifact(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    export_lib.export(model, tmp_path / "exports", model_name="tiny",
                      formats=export_lib.FORMATS,
                      tflite_quantizations=("float32", "dynamic", "int8"),
                      calibration_images=random_images(4, 32), latency_runs=1,
                      verify_in_subprocess=False)
    cli = runpy.run_path(os.path.join(REPO, "applications", "deploy_benchmark.py"))
    out = tmp_path / "deploy.json"
    code = cli["main"](["--export-dir", os.fspath(tmp_path / "exports"), "--batches", "1",
                        "3", "--rounds", "2", "--threads", "1", "--out", os.fspath(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    with open(out, encoding="utf-8") as f:
        result = json.load(f)
    runtimes = {r["runtime"] for r in result["results"]}
    assert {"SavedModel (TensorFlow)", "ONNX Runtime", "OpenVINO f32", "LiteRT float32",
            "LiteRT dynamic", "LiteRT int8"} <= runtimes
    assert {(r["batch"], len(r["rounds"])) for r in result["results"]} == {(1, 2), (3, 2)}
    assert all(r["images_per_s"] > 0 for r in result["results"])
    # Float runtimes agree with the SavedModel (the first row).
    diffs = result["max_abs_diff"]
    for label in ("ONNX Runtime", "OpenVINO f32", "LiteRT float32"):
        assert diffs[label] <= 1e-4, (label, diffs)
    assert "| ONNX Runtime |" in printed and result["input_size"] == 32


def test_deploy_benchmark_needs_an_export(tmp_path, capsys):
    cli = runpy.run_path(os.path.join(REPO, "applications", "deploy_benchmark.py"))
    assert cli["main"](["--export-dir", os.fspath(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "export_report.json" in err[0] and str(tmp_path) in err[0]
