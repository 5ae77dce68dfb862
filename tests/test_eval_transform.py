"""The evaluation transform against Pillow (what timm/torchvision evaluate with)."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnext import pretrained
from keras_resnext import weights as weights_lib
from keras_resnext.preprocessing import DEFAULT_CROP_PCT
from keras_resnext.preprocessing import DEFAULT_INTERPOLATION
from keras_resnext.preprocessing import IMAGENET_MEAN
from keras_resnext.preprocessing import IMAGENET_STD
from keras_resnext.preprocessing import EvalTransform
from keras_resnext.preprocessing import eval_transform
from keras_resnext.preprocessing import preprocess_input

PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def pil_eval_transform(array, size, crop_pct, interpolation):
    """timm's transforms_imagenet_eval: Resize(floor(size/crop_pct)) + CenterCrop."""
    image = Image.fromarray(array)
    scale = math.floor(size / crop_pct)
    w, h = image.size
    if w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    image = image.resize((new_w, new_h), PIL_FILTERS[interpolation])
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), np.float32)


def photo_like(h, w, seed):
    """A smooth random field plus noise (8-bit), closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 2, w // 8 + 2, 3)) * 255
    image = tf.image.resize(base[None], (h, w), method="bicubic")[0].numpy()
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape,size,crop_pct", [
    ((375, 500), 224, 0.965),   # tv2 eval: resize 232, crop 224 (downscale)
    ((301, 200), 224, 0.875),   # portrait, odd sizes
    ((180, 240), 288, 1.0),     # upscale (a1h/ra/bt test size)
])
def test_matches_pil(shape, size, crop_pct, interpolation):
    array = photo_like(*shape, seed=size + shape[0])
    expected = pil_eval_transform(array, size, crop_pct, interpolation)
    out = eval_transform(array, size=size, crop_pct=crop_pct,
                         interpolation=interpolation).numpy()
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    diff = np.abs(out - expected)
    # Measured: 93.7-100% identical, max 2 (PIL's fixed-point weights).
    assert np.mean(diff == 0) >= 0.9
    assert diff.max() <= 2


def test_center_crop_offsets_follow_torchvision():
    # The short side is already the target size: no resize, the crop alone.
    array = np.arange(8 * 11 * 3, dtype=np.float32).reshape(8, 11, 3) % 251
    out = eval_transform(array, size=8, crop_pct=1.0, interpolation="nearest").numpy()
    left = int(round((11 - 8) / 2.0))  # = 2 (round half to even)
    np.testing.assert_array_equal(out, array[:, left:left + 8])


def test_usable_in_tf_data_and_a_graph_with_dynamic_size():
    transform = pretrained.get_pretrained("resnext50_32x4d", "tv2_in1k").eval_transform()
    assert (transform.size, transform.crop_pct, transform.interpolation) == (
        224, 0.965, "bilinear")
    images = [photo_like(120, 160, 0), photo_like(200, 90, 1)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    batch = next(iter(dataset.map(transform.resize_crop).batch(2)))
    assert batch.shape == (2, 224, 224, 3)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
    def serve(image):
        return transform(image)

    graph_out = serve(images[1]).numpy()
    eager_out = preprocess_input(eval_transform(
        images[1], size=224, crop_pct=0.965, interpolation="bilinear")).numpy()
    np.testing.assert_allclose(graph_out, eager_out, atol=1e-6)
    np.testing.assert_allclose(batch[1].numpy(), eval_transform(
        images[1], size=224, crop_pct=0.965, interpolation="bilinear").numpy())


def test_eval_transform_value():
    transform = EvalTransform(64, crop_pct=0.9, interpolation="bicubic",
                              mean=[0.5, 0.5, 0.5], std=np.array([0.25, 0.5, 1.0]))
    assert transform.mean == (0.5, 0.5, 0.5) and transform.std == (0.25, 0.5, 1.0)
    assert transform.replace(size=None, crop_pct=1.0) == EvalTransform(
        64, 1.0, "bicubic", (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert transform.to_dict() == dict(size=64, crop_pct=0.9, interpolation="bicubic",
                                       mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])
    image = photo_like(70, 90, 3)
    x = transform(image).numpy()
    crop = eval_transform(image, size=64, crop_pct=0.9, interpolation="bicubic").numpy()
    np.testing.assert_allclose(x, (crop / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0]),
                               rtol=1e-5, atol=1e-5)
    assert EvalTransform(32) == EvalTransform(32, DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION,
                                              IMAGENET_MEAN, IMAGENET_STD)
    # Checked when made (and when replaced), naming the value.
    with pytest.raises(ValueError, match="crop_pct=0"):
        EvalTransform(32, crop_pct=0)
    with pytest.raises(ValueError, match="crop_pct='0.9'"):
        EvalTransform(32, crop_pct="0.9")
    with pytest.raises(ValueError, match="size=0"):
        transform.replace(size=0)
    with pytest.raises(ValueError, match=r"`std` must be 3 numbers .*positive.*std=\(1.0, 0.0, 1.0\)"):
        EvalTransform(32, std=(1, 0, 1))
    with pytest.raises(ValueError, match="`mean` must be 3 numbers"):
        EvalTransform(32, mean=(0.5, 0.5))


def test_bad_arguments():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="crop_pct=1.5"):
        eval_transform(image, size=8, crop_pct=1.5)
    with pytest.raises(ValueError, match="interpolation='lanczos'"):
        eval_transform(image, size=8, interpolation="lanczos")
    with pytest.raises(ValueError, match="size=0"):
        eval_transform(image, size=0)


def test_hub_id_resolves_to_the_same_entry_everywhere():
    """A registered hf-hub: id is its tag's entry for build, evaluate and export alike."""
    from keras_resnext import export as export_lib
    from keras_resnext.training import evaluate as evaluate_lib

    hub = "hf-hub:timm/resnext50_32x4d.tv_in1k"
    entry = pretrained.get_pretrained("resnext50_32x4d", "tv_in1k")
    assert weights_lib.parse("resnext50_32x4d", hub).entry == entry
    assert weights_lib.parse("resnext50_32x4d", hub + "@main").entry == entry
    assert export_lib.weights_entry_for("resnext50_32x4d", hub) == entry
    resolved = evaluate_lib.resolve_transform("resnext50_32x4d", hub)
    assert resolved.transform == entry.eval_transform()
    assert (resolved.transform.size, resolved.transform.crop_pct) == (224, 0.875)
    assert resolved.source == f"pretrained entry {entry.name}"
    assert resolved.num_classes == 1000
    # Explicit arguments win.
    assert evaluate_lib.resolve_transform(
        "resnext50_32x4d", hub, image_size=160, interpolation="bicubic").transform == (
            EvalTransform(160, 0.875, "bicubic"))
    # An unlisted repository: the defaults, said so.
    other = evaluate_lib.resolve_transform("resnext50_32x4d", "hf-hub:someone/else")
    assert other.source.startswith("defaults (unregistered hub repository")
    assert other.transform == EvalTransform(224) and other.num_classes is None
