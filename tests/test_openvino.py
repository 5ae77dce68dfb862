"""OpenVINO export: an IR (.xml + .bin) per model, one GroupConvolution per grouped conv."""

import json
import os
import runpy

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import export as export_lib
from keras_resnext import preprocessing

from helpers import FIXTURES, TINY_SPEC, random_images

SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=5)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BN statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    out = tmp_path_factory.mktemp("exports")
    report = export_lib.export(model, out, model_name="tiny", formats=("openvino",),
                               latency_runs=1)
    return model, out, report


def test_openvino_ir_is_written_verified_and_reported(tiny_export):
    model, out, report = tiny_export
    rows = {row["format"]: row for row in report["artifacts"]}
    assert list(rows) == ["keras_eager", "keras_graph", "openvino"]
    row = rows["openvino"]
    assert row["ok"] and row["max_abs_diff"] <= 1e-4 and row["precision"] == "f32"
    assert row["path"] == "tiny-1.openvino.xml"
    xml, weights = export_lib.openvino_paths(os.fspath(out), "tiny", 1)
    assert row["size_bytes"] == os.path.getsize(xml) + os.path.getsize(weights)
    # float32 weights (not OpenVINO's default float16 compression): 4 bytes for
    # each convolution and classifier weight (batch norms are folded into them).
    kernels = sum(int(np.prod(w.shape)) for layer in model.layers
                  if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
                  for w in layer.weights)
    assert os.path.getsize(weights) >= 4 * kernels
    # The SavedModel was only the source: not kept, and no staging left behind.
    assert sorted(os.listdir(out)) == sorted(
        ["export_report.json", "export_report.md", "tiny-1.openvino.xml",
         "tiny-1.openvino.bin"])
    assert "| openvino | tiny-1.openvino.xml |" in (out / "export_report.md").read_text()
    with open(out / "export_report.json", encoding="utf-8") as f:
        assert json.load(f)["versions"]["openvino"]


def test_openvino_ir_has_one_grouped_convolution_per_group_conv(tiny_export):
    model, out, report = tiny_export
    import openvino as ov

    grouped = [l for l in model.layers if isinstance(l, keras_resnext.GroupConv2D)]
    ir = ov.Core().read_model(export_lib.openvino_paths(os.fspath(out), "tiny", 1)[0])
    assert export_lib.openvino_grouped_convs(ir) == [TINY_SPEC.cardinality] * len(grouped)
    (row,) = [r for r in report["artifacts"] if r["format"] == "openvino"]
    assert row["grouped_conv_nodes"] == len(grouped) == 2
    assert row["grouped_conv_groups"] == [TINY_SPEC.cardinality]


def test_openvino_ir_runs_any_batch_in_a_fresh_runtime(tiny_export):
    model, out, _ = tiny_export
    images = random_images(5, SIZE, seed=3)
    want = np.asarray(model(preprocessing.preprocess_input(images), training=False))
    run = export_lib.openvino_runner(export_lib.openvino_paths(os.fspath(out), "tiny", 1)[0])
    np.testing.assert_allclose(run(images), want, atol=1e-5)
    np.testing.assert_allclose(run(images[:1]), want[:1], atol=1e-5)


def test_openvino_is_opt_in_and_validated():
    assert "openvino" in export_lib.FORMATS and "openvino" not in export_lib.DEFAULT_FORMATS
    with pytest.raises(ValueError, match="Unknown export format.*openvin"):
        export_lib.validate_request("/tmp/never-written", model_name="m",
                                    formats=("openvin",))


@pytest.mark.slow
def test_cli_formats_openvino(tmp_path, capsys):
    cli = runpy.run_path(os.path.join(REPO, "applications", "export.py"))
    code = cli["main"]([
        "--spec-json", os.path.join(FIXTURES, "resnext_tiny.json"), "--model-name", "tiny",
        "--classes", "10", "--input-size", "32", "--formats", "openvino",
        "--out", os.fspath(tmp_path / "out"), "--latency-runs", "1"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "| openvino | tiny-1.openvino.xml |" in printed
    assert os.path.isfile(tmp_path / "out" / "tiny-1.openvino.bin")
