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

from helpers import assert_save_load_round_trip


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


@pytest.fixture(params=["blocked", "portable"])
def formulation(request, monkeypatch):
    """The two graphs of GroupConv2D, whatever this host's oneDNN setting.

    ``blocked`` is what a runtime without grouped gradient kernels traces;
    ``portable`` (one grouped op) is what exports trace on every runtime and
    what a oneDNN or GPU runtime traces for training.
    """
    monkeypatch.setattr(layers_lib, "native_grouped_conv_supported",
                        lambda dtype="float32": False)
    if request.param == "portable":
        with layers_lib.portable_graph():
            yield request.param
    else:
        yield request.param


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid"), (2, "same")])
def test_matches_keras_conv2d_groups_and_split_reference(formulation, strides, padding):
    ours, theirs, x = make_pair(strides, padding)
    ref = split_reference(x, ours.kernel, groups=4, strides=strides, padding=padding)
    y = ours(x).numpy()
    np.testing.assert_allclose(y, (ref + ours.bias).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, theirs(x).numpy(), rtol=1e-5, atol=1e-5)
    if formulation == "blocked":  # plain convolutions: gradients on every runtime
        for g, w in zip(value_and_grads(ours, x), value_and_grads(theirs, x)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups,channels,strides", [(8, 64, 1), (32, 128, 2)])
def test_blocked_with_several_super_groups_matches_keras(monkeypatch, groups, channels,
                                                          strides):
    """Outputs and gradients of several block-diagonal super-groups (not one dense conv)."""
    monkeypatch.setattr(layers_lib, "native_grouped_conv_supported",
                        lambda dtype="float32": False)
    assert groups // layers_lib.block_merge(groups, channels // groups) > 1
    kwargs = dict(filters=channels, kernel_size=3, strides=strides, padding="same",
                  groups=groups, use_bias=True, bias_initializer="glorot_uniform")
    ours, theirs = GroupConv2D(**kwargs), keras.layers.Conv2D(**kwargs)
    x = tf.random.stateless_normal((2, 7, 7, channels), seed=(3, 4))
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    for got, want in zip(value_and_grads(ours, x), value_and_grads(theirs, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("groups,group_width,merge", [
    (32, 4, 4), (32, 8, 2), (32, 16, 1), (32, 32, 1), (32, 64, 1), (3, 2, 3), (4, 5, 4),
    (6, 3, 6), (8, 3, 8)])
def test_block_merge(groups, group_width, merge):
    assert layers_lib.BLOCK_WIDTH == 16
    assert layers_lib.block_merge(groups, group_width) == merge


def test_block_diagonal_kernels_hold_each_group_on_the_diagonal():
    kernel = tf.random.stateless_normal((3, 3, 2, 12), seed=(1, 3))  # 6 groups, 2 -> 2
    blocks = layers_lib.block_diagonal_kernels(kernel, groups=6, merge=3)
    assert [tuple(b.shape) for b in blocks] == [(3, 3, 6, 6)] * 2
    k, b = kernel.numpy(), [b.numpy() for b in blocks]
    for group in range(6):
        block, j = divmod(group, 3)
        rows, cols = slice(2 * j, 2 * j + 2), slice(2 * j, 2 * j + 2)
        np.testing.assert_array_equal(b[block][:, :, rows, cols],
                                      k[:, :, :, 2 * group:2 * group + 2])
        off = np.delete(b[block][:, :, :, cols], np.s_[2 * j:2 * j + 2], axis=2)
        assert not off.any()


@pytest.mark.parametrize("kwargs,shape", [
    (dict(filters=6, kernel_size=3, groups=3), (1, 6, 6, 8)),   # 8 channels, 3 groups
    (dict(filters=9, kernel_size=3, groups=2), (1, 6, 6, 8)),   # 9 filters, 2 groups
    (dict(filters=8, kernel_size=3, groups=0), None),
    (dict(filters=8, kernel_size=3, groups=-2), None),
])
def test_bad_groups_raise_conv2d_errors(kwargs, shape):
    """The same ValueError as keras.layers.Conv2D, at construction or build."""
    errors = []
    for cls in (GroupConv2D, keras.layers.Conv2D):
        with pytest.raises(ValueError) as info:
            layer = cls(**kwargs)
            layer.build(shape)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert str(kwargs["groups"]) in errors[0]


def test_config_and_weights_equal_conv2d():
    ours, theirs, _ = make_pair(1, "same")
    assert ours.get_config() == {**theirs.get_config(), "name": ours.name}
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert ours.kernel.shape == (3, 3, 2, 8)


def xla_must_compile(layer, x):
    """Nodes and functions of ``layer``'s traced graph that force XLA compilation.

    Keras' own convolution op wraps a grouped convolution on a CPU in
    ``tf.function(jit_compile=True)``: it shows as ``_XlaMustCompile``.
    """
    graph = tf.function(layer).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    hits = [n.name for n in nodes if n.attr["_XlaMustCompile"].b]
    return hits + [f.signature.name for f in graph.library.function
                   if f.attr["_XlaMustCompile"].b]


def test_does_not_call_keras_xla_path():
    """Keras' conv op (the XLA-wrapped one) must never run for GroupConv2D."""
    ours, theirs, x = make_pair(2, "same")
    assert ours(x).shape == (2, 5, 5, 8)
    assert xla_must_compile(ours, x) == []
    assert xla_must_compile(theirs, x)  # what the check would see


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


def test_other_backends_use_the_parent_op(monkeypatch):
    """Under a backend without its own graph (not TensorFlow, JAX or PyTorch:
    keras_resnext.grouped_ops), GroupConv2D defers to Conv2D's own op."""
    monkeypatch.setattr(layers_lib.keras.backend, "backend", lambda: "numpy")
    ours, theirs, x = make_pair(1, "same")
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)
    # Conv2D's op is the XLA-wrapped one on a CPU: GroupConv2D now traces it too.
    assert xla_must_compile(ours, x) and xla_must_compile(theirs, x)


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
