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

from helpers import TINY_SPEC, random_images, randomize_batch_norms

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


def test_timm_baseline_needs_timm_in_one_line(tmp_path):
    """Without timm (or its torchvision), --timm says what to install: one line."""
    import subprocess
    import sys

    with open(tmp_path / "export_report.json", "w", encoding="utf-8") as f:
        json.dump({"artifacts": [], "eval_transform": {"size": 32}}, f)
    code = ("import sys; sys.modules['timm'] = None; "  # what an environment without it does
            "sys.path.insert(0, sys.argv[1] + '/applications'); import deploy_benchmark; "
            "sys.exit(deploy_benchmark.main(sys.argv[2:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, REPO, "--export-dir", os.fspath(tmp_path), "--timm",
         "resnext50_32x4d"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1, proc.stderr[-2000:]
    assert "--timm needs timm" in err[0] and "pip install timm" in err[0]


@pytest.mark.slow
def test_timm_baseline_runs_the_exported_weights(tmp_path, capsys):
    """--timm with the weights the export was made from gives the export's outputs."""
    pytest.importorskip("timm")
    from keras_resnext import convert

    keras.utils.set_random_seed(0)
    model = keras_resnext.applications.ReXNet100(weights=None, input_shape=(32, 32, 3))
    convert.save_safetensors(convert.keras_to_torch(model), tmp_path / "w.safetensors")
    export_lib.export(model, tmp_path / "exports", model_name="rexnet", formats=("saved_model",),
                      latency_runs=1, verify_in_subprocess=False)
    cli = runpy.run_path(os.path.join(REPO, "applications", "deploy_benchmark.py"))
    out = tmp_path / "deploy.json"
    code = cli["main"](["--export-dir", os.fspath(tmp_path / "exports"), "--batches", "2",
                        "--rounds", "1", "--timm", "rexnet_100", "--timm-weights",
                        os.fspath(tmp_path / "w.safetensors"), "--out", os.fspath(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, encoding="utf-8") as f:
        diffs = json.load(f)["max_abs_diff"]
    assert diffs["timm rexnet_100 (PyTorch eager)"] <= 1e-5, diffs


@pytest.mark.slow
def test_keras_in_process_runs_the_exported_weights(tmp_path, capsys):
    """--keras builds the registered model from the export's weights in this process: its
    tf.function (as built and folded), predict_on_batch and predict give the export's outputs."""
    from keras_resnext import convert

    keras.utils.set_random_seed(0)
    model = keras_resnext.applications.ReXNet100(weights=None, input_shape=(32, 32, 3))
    randomize_batch_norms(model)  # folding is then not the identity
    convert.save_safetensors(convert.keras_to_torch(model), tmp_path / "w.safetensors")
    export_lib.export(model, tmp_path / "exports", model_name="rexnet", formats=("saved_model",),
                      latency_runs=1, verify_in_subprocess=False)
    cli = runpy.run_path(os.path.join(REPO, "applications", "deploy_benchmark.py"))
    out = tmp_path / "deploy.json"
    code = cli["main"](["--export-dir", os.fspath(tmp_path / "exports"), "--batches", "1", "2",
                        "--rounds", "1", "--keras", "rexnet_100", "--weights",
                        os.fspath(tmp_path / "w.safetensors"), "--out", os.fspath(out)])
    assert code == 0, capsys.readouterr().err
    with open(out, encoding="utf-8") as f:
        result = json.load(f)
    keras_runs = {k: v for k, v in result["max_abs_diff"].items() if k.startswith("Keras")}
    assert set(keras_runs) == {f"Keras rexnet_100{kind}" for kind in (
        ": tf.function", ", folded: tf.function", ", folded: predict_on_batch",
        ", folded: predict")}
    assert max(keras_runs.values()) <= 1e-5, keras_runs
    assert {r["batch"] for r in result["results"]} == {1, 2}


def test_keras_in_process_refuses_an_unknown_model_in_one_line(tmp_path, capsys):
    with open(tmp_path / "export_report.json", "w", encoding="utf-8") as f:
        json.dump({"artifacts": [], "eval_transform": {"size": 32}}, f)
    cli = runpy.run_path(os.path.join(REPO, "applications", "deploy_benchmark.py"))
    assert cli["main"](["--export-dir", os.fspath(tmp_path), "--keras", "resnext51"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'resnext51'" in err[0] and "registered model" in err[0], err
