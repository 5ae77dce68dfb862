"""preprocess_input and decode_predictions behave like keras.applications, offline."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnext
from keras_resnext import preprocessing

from helpers import random_images


def test_preprocess_input_matches_keras_torch_mode():
    x = random_images(2, 8)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    np.testing.assert_allclose(keras_resnext.preprocess_input(x), expected, rtol=1e-6, atol=1e-6)
    as_tensor = keras_resnext.preprocess_input(tf.constant(x))
    np.testing.assert_allclose(np.asarray(as_tensor), expected, rtol=1e-6, atol=1e-6)
    chw = np.transpose(x, (0, 3, 1, 2))
    np.testing.assert_allclose(
        keras_resnext.preprocess_input(chw, data_format="channels_first"),
        np.transpose(expected, (0, 3, 1, 2)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="Received: data_format='nhwc'"):
        keras_resnext.preprocess_input(x, data_format="nhwc")


def test_class_index_is_packaged_and_ordered():
    classes = preprocessing.imagenet_classes()
    assert len(classes) == 1000
    wnids = [wnid for wnid, _ in classes]
    assert wnids == sorted(wnids)  # standard ImageNet-1k order
    assert classes[0] == ("n01440764", "tench")
    path = os.path.join(os.path.dirname(keras_resnext.__file__), "data",
                        "imagenet_class_index.json")
    with open(path) as f:
        assert len(json.load(f)) == 1000


def test_decode_predictions():
    preds = np.full((2, 1000), 1e-4, "float32")
    preds[0, 1], preds[0, 7] = 0.9, 0.05
    preds[1, 999] = 0.8
    decoded = keras_resnext.decode_predictions(preds, top=2)
    assert [d[:2] for d in decoded[0]] == [("n01443537", "goldfish"), ("n01514668", "cock")]
    assert decoded[0][0][2] == pytest.approx(0.9)
    assert decoded[1][0][1] == "toilet_tissue"


def test_decode_predictions_error_matches_keras():
    bad = np.zeros((2, 10))
    with pytest.raises(ValueError) as theirs:
        keras.applications.imagenet_utils.decode_predictions(bad)
    with pytest.raises(ValueError) as ours:
        keras_resnext.decode_predictions(bad)
    assert str(ours.value) == str(theirs.value)


def test_eval_transform_shape_and_crop_geometry():
    # A 100x200 image with a marker column at the center survives the crop.
    image = np.zeros((100, 200, 3), "uint8")
    image[:, 98:102] = 255
    out = keras_resnext.eval_transform(image, size=64, crop_pct=0.875,
                                       interpolation="bilinear").numpy()
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    # Short side 100 -> floor(64 / 0.875) = 73; the center column stays centered.
    column = out[32, :, 0]
    assert column.argmax() in (31, 32)
    assert out.min() >= 0 and out.max() <= 255
    with pytest.raises(ValueError, match="Received: interpolation='lanczos9'"):
        keras_resnext.eval_transform(image, size=64, interpolation="lanczos9")
    with pytest.raises(ValueError, match="Received: crop_pct=1.5"):
        keras_resnext.eval_transform(image, size=64, crop_pct=1.5)


def test_strings_and_bad_top_are_refused():
    with pytest.raises(ValueError, match="expects 0-255 pixel values.*dtype string"):
        keras_resnext.preprocess_input(tf.constant(["a.jpg"]))
    with pytest.raises(ValueError, match="expects 0-255 pixel values.*dtype string"):
        keras_resnext.preprocess_input(np.array([["1", "2", "3"]]))
    scores = np.full((1, 1000), "0.5")
    with pytest.raises(ValueError, match="expects class scores.*dtype string"):
        keras_resnext.decode_predictions(scores)
    preds = np.random.default_rng(0).random((2, 1000)).astype("float32")
    for top in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=f"Received: top={top!r}"):
            keras_resnext.decode_predictions(preds, top=top)
    assert [len(rows) for rows in keras_resnext.decode_predictions(preds, top=3)] == [3, 3]
