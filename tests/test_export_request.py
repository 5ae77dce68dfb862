"""The export request: one frozen object validated once, and image folders named by role."""

import dataclasses

import pytest

from keras_resnext import export as export_lib
from keras_resnext import preprocessing

from helpers import TINY_SPEC


def test_request_normalises_and_is_frozen(tmp_path):
    request = export_lib.ExportRequest(tmp_path / "o", model_name="m", formats="saved_model")
    assert request.formats == ("saved_model",)
    assert request.out_dir == str(tmp_path / "o")
    # Quantizations only mean something with the tflite format.
    assert request.tflite_quantizations == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.version = 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(version=0), r"`version` must be a positive integer.*version=0"),
    (dict(version=True), r"`version` must be a positive integer"),
    (dict(onnx_opset=11), r"`onnx_opset` must be an integer >= 17"),
    (dict(formats=("pb",)), r"Unknown export format.*'pb'"),
    (dict(model_name=".hidden"), r"`model_name` must be a non-empty file name"),
    (dict(top_k=0), r"`top_k` must be a positive integer. Received: top_k=0"),
])
def test_request_refuses_bad_values_when_made(kwargs, match, tmp_path):
    kwargs = {"model_name": "m", **kwargs}
    with pytest.raises(ValueError, match=match):
        export_lib.ExportRequest(tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_export_by_name_refuses_bad_top_k_before_building(tmp_path, monkeypatch):
    from keras_resnext import model as model_lib

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the request was checked")

    monkeypatch.setattr(model_lib, "build", no_build)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  top_k=0)


def test_validation_folder_errors_say_validation(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="^Validation folder not found"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  validation_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="^Validation folder .* holds no image file"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  validation_dir=empty)
    with pytest.raises(ValueError, match="^Calibration folder .* holds no image file"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  calibration_dir=empty)
    assert not (tmp_path / "o").exists()


def test_undecodable_validation_image_is_named_so(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "0.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"^Cannot decode validation image .*0\.jpg"):
        export_lib.load_images(folder, preprocessing.EvalTransform(32), role="validation")


def test_report_has_no_constant_field(tmp_path):
    """Every report field describes this export; the XLA check refuses, it does not report."""
    import keras
    import keras_resnext

    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    report = export_lib.export(model, tmp_path, model_name="m", formats=("saved_model",),
                               latency_runs=1, verify_in_subprocess=False)
    assert "xla_must_compile" not in report
    assert [row["format"] for row in report["artifacts"]] == [
        "keras_eager", "keras_graph", "saved_model"]
