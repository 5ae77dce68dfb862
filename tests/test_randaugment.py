"""RandAugment against torchvision's magnitudes, with PIL (torchvision's PIL path) as reference."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from keras_resnext.training import randaugment

M = 9  # the imagenet_modern recipe's magnitude: bin 9 of 0-30
LEVEL = M / 30


def _smooth(size=48, seed=0):
    """A smooth uint8 RGB image (bilinear sampling of it is well conditioned)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 220, (6, 6, 3)).astype("uint8")
    return np.array(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))


def _erode(mask, steps=2):
    """``mask`` without the pixels within ``steps`` of a False one (4-neighbours)."""
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = (mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
                & padded[1:-1, 2:])
    return mask


def _op(image, name, magnitude=M):
    out = randaugment.apply_op(tf.constant(image, tf.float32), tf.constant(
        randaugment.OPS.index(name)), tf.constant(float(magnitude)))
    return out.numpy()


def _marker(size=64, row=32, col=52):
    image = np.zeros((size, size, 3), "uint8")
    image[row - 1:row + 2, col - 1:col + 2] = 255
    return image


def _centroid(image):
    weight = image[..., 0].astype("float64")
    rows, cols = np.indices(weight.shape)
    return (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()


@pytest.mark.parametrize("sign", [1, -1])
def test_rotation_is_torchvisions_angle(sign):
    image = _marker()

    def angle(row, col):  # counter-clockwise as displayed, about the centre
        return math.degrees(math.atan2(-(row - 31.5), col - 31.5))

    row, col = _centroid(_op(image, "rotate", sign * M))
    turned = angle(row, col) - angle(*_centroid(image))
    assert abs(turned - sign * 30 * LEVEL) < 0.2, turned  # 9 degrees, not Keras' 324
    reference = np.asarray(Image.fromarray(image).rotate(sign * 30 * LEVEL, Image.BILINEAR))
    np.testing.assert_allclose(_centroid(reference), (row, col), atol=0.05)


@pytest.mark.parametrize("name, axis", [("translate_x", 1), ("translate_y", 0)])
def test_translation_is_whole_pixels_of_150_331(name, axis):
    image = _smooth(64)
    shift = int(150 / 331 * 64 * LEVEL)  # 8 px, torchvision truncates
    expected = np.zeros_like(image)
    if axis == 1:
        expected[:, shift:] = image[:, :-shift]
    else:
        expected[shift:] = image[:-shift]
    np.testing.assert_array_equal(_op(image, name), expected)
    back = _op(image, name, -M)
    assert (back.take(range(64 - shift, 64), axis) == 0).all()


@pytest.mark.parametrize("name, sign", [("shear_x", 1), ("shear_y", -1)])
def test_shear_matches_pil(name, sign):
    image = _smooth(48)
    m = sign * 0.3 * LEVEL
    data = (1, m, 0, 0, 1, 0) if name == "shear_x" else (1, 0, 0, m, 1, 0)
    reference = np.asarray(Image.fromarray(image).transform(
        (48, 48), Image.AFFINE, data, resample=Image.BILINEAR)).astype("float32")
    out = _op(image, name, sign * M)
    # PIL and TensorFlow blend the border with the fill differently: compare inside.
    inside = _erode((reference > 0).all(-1) & (out > 0).all(-1))
    assert inside.mean() > 0.7
    np.testing.assert_allclose(out[inside], reference[inside], atol=1.01)
    # The sheared edge: rows/columns emptied grow with the distance from the origin.
    assert ((reference == 0).all(-1) == (out < 0.5).all(-1)).mean() > 0.98


@pytest.mark.parametrize("name, enhance", [
    ("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color),
    ("contrast", ImageEnhance.Contrast), ("sharpness", ImageEnhance.Sharpness)])
@pytest.mark.parametrize("sign", [1, -1])
def test_enhance_ops_match_pil(name, enhance, sign):
    image = _smooth(32, seed=1)
    image[::3, ::4] = 250  # edges for sharpness
    reference = np.asarray(enhance(Image.fromarray(image)).enhance(1 + sign * 0.9 * LEVEL))
    # PIL rounds its grey image and its result to whole levels.
    np.testing.assert_allclose(_op(image, name, sign * M), reference, atol=1.6)


@pytest.mark.parametrize("name, reference", [
    ("posterize", lambda im: ImageOps.posterize(im, 8 - round(4 * LEVEL))),
    ("solarize", lambda im: ImageOps.solarize(im, 255 * (1 - LEVEL))),
    ("autocontrast", ImageOps.autocontrast),
    ("equalize", ImageOps.equalize)])
def test_level_ops_match_pil(name, reference):
    image = (_smooth(32, seed=2) * 0.6 + 30).astype("uint8")  # not the full range
    image[0, 0] = (30, 31, 120)
    image[5:8, 5:8] = 250
    expected = np.asarray(reference(Image.fromarray(image))).astype("float32")
    atol = 1.0 if name == "autocontrast" else 0  # PIL's LUT truncates
    np.testing.assert_allclose(_op(image, name), expected, atol=atol)
    assert not np.array_equal(expected, image)


def test_posterize_and_solarize_magnitudes():
    image = np.arange(256, dtype="float32").reshape(16, 16, 1).repeat(3, -1)
    assert set(np.unique(_op(image, "posterize", 30))) == set(range(0, 256, 16))  # 4 bits
    solarized = _op(image, "solarize", 9)[..., 0].ravel()
    np.testing.assert_array_equal(solarized[:179], np.arange(179))
    np.testing.assert_array_equal(solarized[179:], 255 - np.arange(179, 256))


def test_ops_are_drawn_per_image():
    layer = randaugment.RandAugment(magnitude=M, seed=3)
    images = np.repeat(_smooth(32)[None], 16, 0)
    ops, magnitudes = layer.draw(16)
    assert len({tuple(row) for row in ops.numpy()}) > 8
    signed = np.isin(ops.numpy(), [randaugment.OPS.index(n) for n in randaugment.SIGNED])
    assert (magnitudes.numpy()[~signed] == M).all()
    assert {-M, M} <= set(magnitudes.numpy()[signed])
    out = layer(images).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert len({o.tobytes() for o in out}) > 8
    assert out.min() >= 0 and out.max() <= 255


def test_same_seed_same_output():
    images = np.stack([_smooth(32, seed=s) for s in range(8)])
    first = randaugment.RandAugment(seed=5)(images).numpy()
    again = randaugment.RandAugment(seed=5)(images).numpy()
    other = randaugment.RandAugment(seed=6)(images).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_bad_magnitude():
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 30\].*magnitude=31"):
        randaugment.RandAugment(magnitude=31)


def test_recipe_magnitude_is_timms_tenths():
    """The recipes' M in [0, 10] is timm's (rand-m9: 9/10 of the largest rotation, 30 deg)."""
    from keras_resnext.training import data, recipes

    recipe = recipes.get_recipe("imagenet_modern")
    layer = data.augmentation_layers(recipe, seed=0)["randaugment"]
    image = _marker()
    out = randaugment.apply_op(tf.constant(image, tf.float32),
                               tf.constant(randaugment.OPS.index("rotate")),
                               tf.constant(float(recipe.randaugment)),
                               layer.num_magnitude_bins).numpy()
    reference = np.asarray(Image.fromarray(image).rotate(30 * recipe.randaugment / 10,
                                                         Image.BILINEAR))
    np.testing.assert_allclose(_centroid(out), _centroid(reference), atol=0.05)
