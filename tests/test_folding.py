"""``fold_batch_norm``: BatchNorm folded into its convolution gives the same outputs.

Checked on every family's timm fixture (against timm's logits, after giving every
BatchNorm non-trivial statistics so that folding is not the identity), on the
layers that must not be folded, in bfloat16, and through a ``.keras`` round trip.
On JAX and PyTorch it runs in tests/test_benchmark.py's ``--folded`` children.
"""

import os

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext import folding

import helpers
from helpers import FIXTURE_FAMILIES
from helpers import FIXTURES
from helpers import TINY_SPEC
from helpers import fixture_model
from helpers import random_images


def count_batch_norms(model):
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def randomize_batch_norms(model):
    """Statistics and affine weights far from 0/1, as after training."""
    helpers.randomize_batch_norms(model, mean_std=0.3, variance=(0.3, 2.0), affine=True)


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_every_family_folds_every_batch_norm(name):
    model, state_dict = fixture_model(name)
    convert.torch_to_keras(model, state_dict)  # timm's weights, then trained-looking BNs
    randomize_batch_norms(model)
    folded = folding.fold_batch_norm(model)
    assert count_batch_norms(model) > 0 and count_batch_norms(folded) == 0
    x = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))["input_nhwc"]
    expected = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 1  # the comparison is not against ~zeros
    assert np.abs(np.asarray(folded(x)) - expected).max() <= 1e-5 * np.abs(expected).max()
    first = next(iter(folding.foldable_pairs(model)))
    assert len(folded.get_layer(first).weights) == 2  # a bias was added


def test_only_a_conv_whose_output_feeds_just_its_batch_norm_is_folded():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="a")(inputs)
    shared = keras.layers.BatchNormalization(name="a_bn")(a)  # a also feeds "sum"
    b = keras.layers.Conv2D(4, 1, activation="relu", name="b")(shared)
    b = keras.layers.BatchNormalization(name="b_bn")(b)  # after an activation
    c = keras.layers.Conv2D(4, 1, name="c")(b)  # with a bias already: folded into it
    c = keras.layers.BatchNormalization(name="c_bn")(c)
    d = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="d")(c)
    d = keras.layers.BatchNormalization(name="d_bn")(d)
    out = keras.layers.Concatenate()([keras.layers.Add(name="sum")([a, c]), d])
    model = keras.Model(inputs, out)
    randomize_batch_norms(model)
    assert folding.foldable_pairs(model) == {"c": "c_bn", "d": "d_bn"}
    folded = folding.fold_batch_norm(model)
    assert {layer.name for layer in folded.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {"a_bn", "b_bn"}
    x = random_images(2, 8) / 255.0
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_folded_model_in_bfloat16_and_through_a_keras_file(tmp_path, dtype_policy):
    dtype_policy("mixed_bfloat16")
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=5,
                                classifier_activation=None)
    randomize_batch_norms(model)
    folded = folding.fold_batch_norm(model)
    assert folded.get_layer("conv1_conv").compute_dtype == "bfloat16"
    x = random_images(2, 32) / 255.0
    expected = np.asarray(model(x, training=False), "float32")
    got = np.asarray(folded(x), "float32")
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()  # bf16 rounding
    folded.save(tmp_path / "folded.keras")
    reloaded = keras.saving.load_model(tmp_path / "folded.keras")
    assert count_batch_norms(reloaded) == 0
    np.testing.assert_array_equal(np.asarray(reloaded(x), "float32"), got)


def test_fold_batch_norm_needs_a_functional_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="needs a functional model.*Received: Subclassed"):
        keras_resnext.fold_batch_norm(Subclassed())
