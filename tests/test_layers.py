"""GroupConv2D: same numbers as Conv2D(groups) and a split reference, no XLA."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnext import export
from keras_resnext import layers as layers_lib
from keras_resnext.layers import GroupConv2D

from conftest import assert_save_load_round_trip


def split_reference(x, kernel, *, groups, strides, padding):
    """One ungrouped convolution per group, concatenated."""
    xs = tf.split(x, groups, axis=-1)
    ks = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.nn.convolution(a, k, strides=strides, padding=padding.upper())
                      for a, k in zip(xs, ks)], axis=-1)


def make_pair(strides, padding, groups=4, filters=8):
    kwargs = dict(filters=filters, kernel_size=3, strides=strides, padding=padding,
                  groups=groups, use_bias=True, bias_initializer="glorot_uniform")
    ours = GroupConv2D(**kwargs)
    theirs = keras.layers.Conv2D(**kwargs)
    x = tf.random.stateless_normal((2, 9, 9, 8), seed=(1, 2))
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    return ours, theirs, x


def value_and_grads(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.cos(y))
    gx, gk, gb = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [y.numpy(), gx.numpy(), gk.numpy(), gb.numpy()]


@pytest.fixture(params=["native", "split_fallback"])
def conv_path(request, monkeypatch):
    if request.param == "split_fallback":
        monkeypatch.setattr(layers_lib, "native_grouped_conv_supported",
                            lambda dtype="float32": False)
    else:
        assert layers_lib.native_grouped_conv_supported()
    return request.param


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid"), (2, "same")])
def test_matches_keras_conv2d_groups_and_split_reference(conv_path, strides, padding):
    ours, theirs, x = make_pair(strides, padding)
    got = value_and_grads(ours, x)
    want = value_and_grads(theirs, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    ref = split_reference(x, ours.kernel, groups=4, strides=strides, padding=padding)
    np.testing.assert_allclose(got[0], (ref + ours.bias).numpy(), rtol=1e-5, atol=1e-5)


def test_config_and_weights_equal_conv2d():
    ours, theirs, _ = make_pair(1, "same")
    assert ours.get_config() == {**theirs.get_config(), "name": ours.name}
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert ours.kernel.shape == (3, 3, 2, 8)


def test_does_not_call_keras_xla_path(monkeypatch):
    """Keras' conv op (the XLA-wrapped one) must never run for GroupConv2D."""
    import keras.src.backend.tensorflow.nn as keras_tf_nn

    def forbidden(*args, **kwargs):
        raise AssertionError("keras.ops.conv was called")

    monkeypatch.setattr(keras_tf_nn, "conv", forbidden)
    ours, _, x = make_pair(2, "same")
    assert ours(x).shape == (2, 5, 5, 8)


def test_keras_save_load_round_trip(tmp_path):
    inputs = keras.Input((9, 9, 8))
    outputs = GroupConv2D(8, 3, groups=4, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    restored = assert_save_load_round_trip(
        model, np.random.default_rng(0).normal(size=(2, 9, 9, 8)).astype("float32"),
        tmp_path)
    assert isinstance(restored.layers[1], GroupConv2D)


@pytest.mark.parametrize("layer_cls,expect_xla", [(GroupConv2D, False),
                                                  (keras.layers.Conv2D, True)])
def test_saved_model_has_no_xla_must_compile(tmp_path, layer_cls, expect_xla):
    inputs = keras.Input((9, 9, 8))
    outputs = layer_cls(8, 3, groups=4, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "sm")
    model.export(path, verbose=False)
    assert bool(export.find_xla_functions(path)) == expect_xla


def test_fallback_without_onednn_in_a_fresh_process():
    """With oneDNN off TensorFlow has no grouped CPU gradient: the fallback kicks in."""
    code = (
        "import numpy as np, tensorflow as tf\n"
        "from keras_resnext import layers as L\n"
        "assert not L.native_grouped_conv_supported()\n"
        "x = tf.random.stateless_normal((1, 6, 6, 8), seed=(3, 4))\n"
        "k = tf.random.stateless_normal((3, 3, 2, 8), seed=(5, 6))\n"
        "y = L.grouped_convolution(x, k, strides=(2, 2), padding='valid',"
        " dilation_rate=(1, 1), data_format='channels_last', groups=4)\n"
        "xs, ks = tf.split(x, 4, -1), tf.split(k, 4, -1)\n"
        "ref = tf.concat([tf.nn.conv2d(a, b, 2, 'VALID') for a, b in zip(xs, ks)], -1)\n"
        "np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)\n"
        "try:\n"
        "    with tf.GradientTape() as tape:\n"
        "        tape.watch(x)\n"
        "        z = tf.nn.convolution(x, k)\n"
        "    tape.gradient(z, x)\n"
        "    raise SystemExit('native grouped conv gradient unexpectedly worked')\n"
        "except tf.errors.InvalidArgumentError:\n"
        "    print('fallback-ok')\n")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fallback-ok" in result.stdout


def test_other_backends_use_the_parent_op(monkeypatch):
    """Under a non-TensorFlow backend GroupConv2D defers to Conv2D's own op."""
    import keras.src.backend.tensorflow.nn as keras_tf_nn

    calls = []
    original = keras_tf_nn.conv

    def recording(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_tf_nn, "conv", recording)
    monkeypatch.setattr(layers_lib.keras.backend, "backend", lambda: "jax")
    ours, theirs, x = make_pair(1, "same")
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)
    assert len(calls) == 2


def test_float16_gradients_on_cpu_use_the_fallback():
    """TensorFlow has no float16 grouped-conv gradient on CPU: the layer still trains."""
    assert layers_lib.native_grouped_conv_supported("float32")
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("GPU kernels support float16 grouped gradients")
    assert not layers_lib.native_grouped_conv_supported("float16")
    layer = GroupConv2D(8, 3, groups=4, padding="same", dtype="float16")
    x = tf.cast(tf.random.stateless_normal((2, 6, 6, 8), seed=(7, 8)), "float16")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    gx = tape.gradient(y, x)
    assert gx.dtype == tf.float16 and gx.shape == x.shape
    assert np.all(np.isfinite(gx.numpy()))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_batch_norm_matches_keras_batch_normalization(training, center, scale):
    kwargs = dict(epsilon=1e-5, momentum=0.9, center=center, scale=scale)
    ours = layers_lib.BatchNorm(**kwargs)
    theirs = keras.layers.BatchNormalization(**kwargs)
    x = tf.random.stateless_normal((4, 5, 5, 6), seed=(9, 10)) * 3.0 + 1.0
    ours.build(x.shape)
    theirs.build(x.shape)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in theirs.weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append([y.numpy()] + [g.numpy() for g in grads]
                       + [w.numpy() for w in layer.non_trainable_weights])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    if training:  # the moving statistics moved, identically
        assert not np.allclose(results[0][-1], weights[-1])


def test_batch_norm_fast_path_uses_the_fused_kernel_and_falls_back():
    layer = layers_lib.BatchNorm()
    x = tf.random.stateless_normal((2, 3, 3, 4), seed=(1, 1))
    layer.build(x.shape)
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    assert any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())
    assert layer._fused_data_format(x) == "NHWC"
    assert layers_lib.BatchNorm(axis=1)._fused_data_format(x) == "NCHW"
    sequence = tf.random.stateless_normal((2, 3, 4), seed=(1, 2))
    assert layers_lib.BatchNorm()._fused_data_format(sequence) is None
    assert layers_lib.BatchNorm(synchronized=True)._fused_data_format(x) is None
    out = layers_lib.BatchNorm()(sequence, training=True)  # the parent's path
    np.testing.assert_allclose(np.mean(out.numpy(), axis=(0, 1)), 0.0, atol=1e-5)


def test_batch_norm_mixed_bfloat16_and_save_load(tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    layer = layers_lib.BatchNorm(dtype="mixed_bfloat16")
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layers_lib.BatchNorm()(inputs))
    model.layers[1].moving_variance.assign([2.0, 3.0, 4.0])
    restored = assert_save_load_round_trip(model, x, tmp_path)
    assert isinstance(restored.layers[1], layers_lib.BatchNorm)
