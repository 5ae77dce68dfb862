"""preprocessing.read_image: 16-bit images scaled, EXIF orientation applied (issue 21)."""

import importlib.util
import json
import os

from huggingface_hub import constants as hf_constants
import numpy as np
import pytest
from PIL import Image

from keras_resnext import preprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
EXIF_ORIENTATION = 0x0112


def _smooth_image(height=48, width=64, seed=0):
    """A smooth 8-bit RGB image (so resizing and crops change little)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def _gray_pair(tmp_path, mode="I;16"):
    """An 8-bit greyscale PNG and the same image as 16-bit (value * 257).

    ``mode="I;16"``: a 16-bit PNG (what Pillow 13 opens it as); ``"I"``: the
    32-bit integer mode older Pillow opened 16-bit PNGs as (written as TIFF,
    since Pillow 13 writes no mode-I PNG).
    """
    gray8 = _smooth_image()[..., 0]
    path8 = tmp_path / "gray8.png"
    path16 = tmp_path / ("gray16.png" if mode == "I;16" else "gray16.tif")
    Image.fromarray(gray8).save(path8)
    wide = gray8.astype(np.uint16) * 257
    Image.fromarray(wide if mode == "I;16" else wide.astype(np.int32)).save(path16)
    return gray8, os.fspath(path8), os.fspath(path16)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path, mode):
    gray8, path8, path16 = _gray_pair(tmp_path, mode)
    with Image.open(path16) as image:
        assert image.mode == mode
    got = preprocessing.read_image(path16)
    assert got.shape == gray8.shape + (3,) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, preprocessing.read_image(path8))
    np.testing.assert_array_equal(got[..., 1], gray8)
    # What convert("RGB") gave: clipped to 255 almost everywhere.
    assert abs(got.mean() - gray8.mean()) < 1


def test_sixteen_bit_scaling_matches_tensorflow_decode(tmp_path):
    """The training pipeline decodes with TensorFlow: the same 8 bits (docs/training.md)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    wide = rng.integers(0, 65536, (20, 30), dtype=np.uint16)  # not multiples of 257
    path = tmp_path / "noise16.png"
    Image.fromarray(wide).save(path)
    decoded = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False)
    np.testing.assert_array_equal(preprocessing.read_image(path), decoded.numpy())


# EXIF orientation -> the transpose that stores an upright image that way.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
             8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    # Upright: 60 high, 40 wide; red top-left, green top-right, blue bottom.
    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:30, :20] = (255, 0, 0)
    upright[:30, 20:] = (0, 255, 0)
    upright[30:] = (0, 0, 255)
    stored = Image.fromarray(upright).transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / f"photo_{orientation}.jpg"
    stored.save(path, quality=95, exif=exif)

    got = preprocessing.read_image(path)
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 8
    # Without the orientation, the same pixels are read as stored.
    stored.save(tmp_path / "stored.png")
    assert preprocessing.read_image(tmp_path / "stored.png").shape == np.asarray(stored).shape


def test_undecodable_file_is_a_value_error(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not a decodable image"):
        preprocessing.read_image(path)
    with pytest.raises(OSError):
        preprocessing.read_image(tmp_path / "missing.png")


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def test_classify_gives_16_bit_png_its_8_bit_prediction(tmp_path, isolated_caches, capsys):
    spec = importlib.util.spec_from_file_location(
        "classify_app", os.path.join(ROOT, "applications", "classify.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    _, path8, path16 = _gray_pair(tmp_path)
    code = app.main([path8, path16, "--model", "tiny",
                     "--spec", os.path.join(FIXTURES, "resnext_tiny.json"),
                     "--weights", os.path.join(FIXTURES, "resnext_tiny.safetensors"),
                     "--top", "10", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)["results"]
    # All 10 classes: the fixture model is confident, its top-1 alone says little.
    probs = [{row["index"]: row["probability"] for row in r["top"]} for r in results]
    assert results[0]["top"][0]["index"] == results[1]["top"][0]["index"]
    np.testing.assert_allclose([probs[1][i] for i in range(10)],
                               [probs[0][i] for i in range(10)], rtol=1e-5, atol=1e-7)
