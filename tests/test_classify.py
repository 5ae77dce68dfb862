"""applications/classify.py on the tiny timm fixture, real image files."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

from huggingface_hub import constants as hf_constants
import numpy as np
import pytest
from PIL import Image

import keras_resnext
from keras_resnext import convert
from keras_resnext import classifier as classifier_lib
from keras_resnext import preprocessing
from keras_resnext import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SCRIPT = os.path.join(ROOT, "applications", "classify.py")
SPEC = os.path.join(FIXTURES, "resnext_tiny.json")
WEIGHTS = os.path.join(FIXTURES, "resnext_tiny.safetensors")


def load_app():
    spec = importlib.util.spec_from_file_location("classify_app", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (whatever test ran
    # first); tests state it through the environment, which hub.py reads.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def images(tmp_path):
    """A PNG (with alpha), a JPEG, a grayscale PNG, a corrupt JPEG, a missing file."""
    rng = np.random.default_rng(7)
    paths = {}
    # Smooth images so that different crops give different predictions.
    for name, shape, mode in (("photo.png", (90, 120, 4), "RGBA"),
                              ("photo.jpg", (80, 70, 3), "RGB"),
                              ("gray.png", (64, 96), "L")):
        array = rng.integers(0, 255, shape, dtype=np.uint8)
        path = tmp_path / name
        Image.fromarray(array, mode).save(path)
        paths[name] = str(path)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(open(paths["photo.jpg"], "rb").read()[:40] + b"\x00" * 16)
    paths["corrupt.jpg"] = str(corrupt)
    paths["missing.png"] = str(tmp_path / "missing.png")
    return paths


def expected_probabilities(path):
    """The fixture model's softmax on the image, computed without the app."""
    config = json.load(open(SPEC, encoding="utf-8"))
    model = keras_resnext.build(keras_resnext.Spec.from_config(config), classes=10,
                                input_shape=(64, 64, 3))
    convert.torch_to_keras(model, convert.read_safetensors(WEIGHTS))
    image = np.asarray(Image.open(path).convert("RGB"))
    x = keras_resnext.eval_transform(image, size=64, crop_pct=0.875, interpolation="bilinear")
    return model.predict(keras_resnext.preprocess_input(x)[None], verbose=0)[0]


def test_json_output_and_per_file_errors(images, capsys):
    app = load_app()
    order = ["photo.png", "corrupt.jpg", "photo.jpg", "missing.png", "gray.png"]
    code = app.main([images[n] for n in order] + [
        "--model", "tiny", "--spec", SPEC, "--weights", WEIGHTS, "--top", "3", "--json",
        "--batch-size", "2"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1
    assert report["eval_transform"] == dict(size=64, crop_pct=0.875, interpolation="bilinear",
                                      mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert [r["file"] for r in report["results"]] == [
        images["photo.png"], images["photo.jpg"], images["gray.png"]]
    assert [e["file"] for e in report["errors"]] == [images["corrupt.jpg"], images["missing.png"]]
    assert "not a decodable image" in report["errors"][0]["error"]
    assert "No such file" in report["errors"][1]["error"]
    assert f"error: {images['corrupt.jpg']}: not a decodable image" in captured.err
    for result in report["results"]:
        expected = expected_probabilities(result["file"])
        top = result["top"]
        assert [row["rank"] for row in top] == [1, 2, 3]
        assert [row["index"] for row in top] == list(np.argsort(-expected)[:3])
        assert top[0]["label"] == f"class_{top[0]['index']}"
        np.testing.assert_allclose([row["probability"] for row in top],
                                   np.sort(expected)[::-1][:3], rtol=1e-4, atol=1e-6)


def test_table_output_and_exit_code_zero(images, capsys):
    app = load_app()
    code = app.main([images["photo.jpg"], "--model", "tiny", "--spec", SPEC,
                     "--weights", WEIGHTS, "--top", "2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == images["photo.jpg"]
    assert out[1].split() == ["rank", "prob", "class"]
    expected = expected_probabilities(images["photo.jpg"])
    best = int(np.argmax(expected))
    assert out[2].split() == ["1", f"{expected[best]:.4f}", f"class_{best}", f"({best})"]
    assert len(out) == 4


def test_setup_errors_exit_2(images, capsys):
    app = load_app()
    foreign = os.path.join(FIXTURES, "resnext_tiny_d.safetensors")
    assert app.main([images["photo.jpg"], "--model", "tiny", "--spec", SPEC,
                     "--weights", foreign]) == 2
    assert "no tensor 'conv1.weight'" in capsys.readouterr().err
    assert app.main([images["photo.jpg"], "--model", "resnext29_8x64d"]) == 2
    assert "No pretrained weights are published for 'resnext29_8x64d'" in capsys.readouterr().err
    # HF_HUB_OFFLINE=1 and an empty hub cache: the message says what to do.
    assert app.main([images["photo.jpg"], "--model", "resnext50_32x4d"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "hf download timm/resnext50_32x4d.tv2_in1k" in err


def test_classifier_uses_the_tag_eval_transform(tmp_path, monkeypatch):
    from helpers import FakeHub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    base = pretrained.get_pretrained("resnext50_32x4d", "a1h_in1k")  # bicubic, 288 @ 1.0
    entry = dataclasses.replace(base, arch="tiny", hf_hub_id="test/tiny.a1h",
                                test_input_size=72, num_classes=10)
    registry = {"tiny": {"a1h_in1k": entry}}
    spec = keras_resnext.Spec.from_config(json.load(open(SPEC, encoding="utf-8")))
    with FakeHub({("test/tiny.a1h", "model.safetensors"): open(WEIGHTS, "rb").read()}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        classifier = classifier_lib.build_classifier(
            "tiny", "imagenet", spec=spec, classes=10, registry=registry)
    assert classifier.transform == preprocessing.EvalTransform(
        size=72, crop_pct=1.0, interpolation="bicubic", mean=entry.mean, std=entry.std)
    assert classifier.model.input_shape == (None, 72, 72, 3)
    assert classifier.loaded.entry == entry
    overridden = classifier_lib.build_classifier(
        "tiny", WEIGHTS, spec=spec, classes=10, size=48, interpolation="bicubic")
    assert overridden.transform == preprocessing.EvalTransform(
        size=48, crop_pct=0.875, interpolation="bicubic")
    assert not overridden.loaded.from_cache
    again = classifier_lib.build_classifier("tiny", WEIGHTS, spec=spec, classes=10, size=56)
    assert again.loaded.from_cache  # the input size is not part of the weights layout


@pytest.mark.slow
def test_command_line(images):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, SCRIPT, images["photo.png"], images["corrupt.jpg"], "--model",
         "tiny", "--spec", SPEC, "--weights", WEIGHTS, "--top", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["results"]) == 1 and len(report["errors"]) == 1
    expected = expected_probabilities(images["photo.png"])
    assert report["results"][0]["top"][0]["index"] == int(np.argmax(expected))
