"""Which graph GroupConv2D and BatchNorm trace on each runtime, and that each is right.

GroupConv2D picks per runtime and dtype (keras_resnext/layers.py): the native
grouped op, fenced by ``EnsureShape`` only where Grappler's fused kernel has no
groups (oneDNN off) and always in exports; the blocked formulation where the
fast grouped kernels are missing; the native forward with float32 gradients
for a dtype whose grouped forward exists without gradients. Runtime-dependent
checks run in children with ``TF_ENABLE_ONEDNN_OPTS`` set explicitly.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnext import layers as layers_lib

from helpers import TINY
from helpers import run_child


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_fence_only_where_the_fused_kernel_lacks_groups(onednn):
    out = run_child(f"""
        import json
        import numpy as np, tensorflow as tf
        from tensorflow.python.util import _pywrap_util_port
        import keras_resnext
        from keras_resnext import layers as L

        on = _pywrap_util_port.IsMklEnabled()
        assert on == ({onednn} == 1)
        assert L.fused_grouped_conv_supported("float32") == on
        model = keras_resnext.build({TINY}, input_shape=(32, 32, 3), classes=3)

        def ops():
            fn = tf.function(lambda t: model(t, training=False))
            graph = fn.get_concrete_function(tf.TensorSpec((2, 32, 32, 3))).graph
            return [node.op for node in graph.as_graph_def().node]

        user = ops()
        with L.portable_graph():
            exported = ops()
        x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
        graph_y = tf.function(lambda t: model(t, training=False))(x)
        np.testing.assert_allclose(np.asarray(graph_y), np.asarray(model(x)), atol=1e-6)
        print(json.dumps({{
            "grouped": sum(isinstance(l, L.GroupConv2D) for l in model.layers),
            "user": {{op: user.count(op) for op in ("EnsureShape", "Einsum")}},
            "exported": {{op: exported.count(op) for op in ("EnsureShape", "Einsum")}}}}))
    """, onednn)
    counts = json.loads(out.strip().splitlines()[-1])
    grouped = counts["grouped"]
    # Exports: one fenced grouped op per GroupConv2D whatever the runtime.
    assert counts["exported"] == {"EnsureShape": grouped, "Einsum": 0}
    if onednn == "1":  # native and unfenced: oneDNN fuses it with BN + ReLU
        assert counts["user"] == {"EnsureShape": 0, "Einsum": 0}
    else:  # blocked (block-diagonal kernels from an einsum), nothing to fence
        assert counts["user"] == {"EnsureShape": 0, "Einsum": grouped}


FORWARD_ONLY = """
    import json
    import keras, numpy as np, tensorflow as tf
    from keras_resnext import layers as L

    # A runtime with the grouped forward kernel in 16-bit types but no
    # gradient kernels for them (what the probes report there).
    real = L.native_grouped_conv_supported
    L.native_grouped_conv_supported = lambda dtype="float32": dtype == "float32" and real(dtype)

    # No bias: its gradient is a bfloat16 sum of the output gradient (Keras'
    # add, not the convolution), ~5% off the float32 one here.
    kw = dict(filters=64, kernel_size=3, strides={strides}, padding="same", groups=8,
              use_bias=False)
    x = tf.random.stateless_normal((2, 9, 9, 32), seed=(1, 2))
    ref = keras.layers.Conv2D(**kw)
    ref.build(x.shape)
    layer = L.GroupConv2D(**kw, dtype="{policy}")
    layer.build(x.shape)
    layer.set_weights(ref.get_weights())

    @tf.function
    def step(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32") * tf.cos(tf.cast(y, "float32")))
        return [tf.cast(t, "float32") for t in
                [y] + tape.gradient(loss, [x, layer.kernel])]

    got, want = step(layer, x), step(ref, x)
    for g, w in zip(got, want):
        scale = float(np.abs(w.numpy()).max())
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol={atol} * scale)
    ops = [n.op for n in step.get_concrete_function(layer, x).graph.as_graph_def().node]
    print(json.dumps({{"Einsum": ops.count("Einsum"), "Conv2D": ops.count("Conv2D"),
                      "forward": L.native_grouped_forward_supported("bfloat16")}}))
"""


@pytest.mark.parametrize("onednn", ["0", "1"])
@pytest.mark.parametrize("strides", [1, 2])
def test_forward_only_dtype_runs_the_native_forward_with_float32_gradients(onednn, strides):
    """Outputs and gradients equal Conv2D(groups) in float32, within bfloat16 rounding."""
    # Without oneDNN the blocked bfloat16 kernel gradient (TensorFlow's own
    # kernels) varies from run to run by up to ~4% of its largest element.
    atol = 3e-2 if onednn == "1" else 8e-2
    out = run_child(FORWARD_ONLY.format(strides=strides, policy="mixed_bfloat16", atol=atol),
                    onednn)
    counts = json.loads(out.strip().splitlines()[-1])
    if onednn == "1":  # oneDNN's bfloat16 grouped forward: one op, no blocked kernels
        assert counts == {"Einsum": 0, "Conv2D": 1, "forward": True}
    else:  # no fast grouped kernel at all: blocked
        assert counts["Einsum"] > 0 and not counts["forward"]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_batch_norm_feeds_16_bit_inputs_to_the_fused_kernel(policy):
    """No cast around FusedBatchNormV3 (lets oneDNN fuse it); outputs as Keras' layer."""
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(2, 5, 5, 8)).astype("float32")
    ours = layers_lib.BatchNorm(dtype=policy)
    theirs = keras.layers.BatchNormalization(dtype=policy)
    ours.build(x.shape)
    theirs.build(x.shape)
    for layer in (ours, theirs):
        layer.moving_mean.assign(np.linspace(-1, 1, 8))
        layer.moving_variance.assign(np.linspace(0.5, 2, 8))
    compute = ours.compute_dtype
    x16 = tf.cast(x, compute)
    for training in (False, True):
        fn = tf.function(lambda t, training=training: ours(t, training=training))
        graph = fn.get_concrete_function(tf.TensorSpec(x.shape, compute)).graph
        (bn,) = [n for n in graph.as_graph_def().node if n.op == "FusedBatchNormV3"]
        assert tf.dtypes.as_dtype(bn.attr["T"].type).name == compute
        assert not [n for n in graph.as_graph_def().node if n.op == "Cast"
                    and tf.dtypes.as_dtype(n.attr["DstT"].type) == tf.float32
                    and tf.dtypes.as_dtype(n.attr["SrcT"].type).name == compute]
        y = ours(x16, training=training)
        assert y.dtype == compute
        np.testing.assert_allclose(
            tf.cast(y, "float32").numpy(),
            tf.cast(theirs(x16, training=training), "float32").numpy(), atol=3e-2)
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(),
                               atol=1e-2)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               theirs.moving_variance.numpy(), rtol=1e-2)
