"""The same model on runtimes with and without oneDNN, each in its own process.

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 neural-network
features, and only oneDNN has grouped-conv gradient kernels, so nothing here
trusts the host's default: every check runs in a child process with
``TF_ENABLE_ONEDNN_OPTS`` set explicitly.
"""

import json
import os
import textwrap

import pytest

from helpers import TINY
from helpers import run_child


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_layer_and_models_on_each_runtime(onednn):
    out = run_child(f"""
        import json
        import keras, numpy as np, tensorflow as tf
        from tensorflow.python.util import _pywrap_util_port
        import keras_resnext
        from keras_resnext import layers as L

        on = _pywrap_util_port.IsMklEnabled()
        assert on == ({onednn} == 1), on
        gpu = bool(tf.config.list_logical_devices("GPU"))
        # Grouped gradient kernels exist only with oneDNN (float32) or on a GPU.
        assert L.native_grouped_conv_supported("float32") == (on or gpu)

        # Outputs and gradients equal keras.layers.Conv2D(groups) within 1e-5.
        for strides, padding in [(1, "same"), (2, "valid")]:
            kw = dict(filters=16, kernel_size=3, strides=strides, padding=padding,
                      groups=4, use_bias=True, bias_initializer="glorot_uniform")
            ours, theirs = L.GroupConv2D(**kw), keras.layers.Conv2D(**kw)
            x = tf.random.stateless_normal((2, 9, 9, 16), seed=(1, 2))
            ours.build(x.shape); theirs.build(x.shape)
            theirs.set_weights(ours.get_weights())
            res = []
            for layer in (ours, theirs):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(y * tf.cos(y))
                res.append([y] + tape.gradient(loss, [x, layer.kernel, layer.bias]))
            for g, w in zip(*res):
                np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5)

        # Graph-mode inference: the remapper must not fuse a grouped conv with BN/ReLU.
        model = keras_resnext.build({TINY}, input_shape=(32, 32, 3), classes=3)
        x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
        y = tf.function(lambda t: model(t, training=False))(x)
        np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=1e-5, atol=1e-6)

        # Every dtype policy trains (gradients through every grouped conv).
        losses = {{}}
        for policy in ["float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16"]:
            keras.config.set_dtype_policy(policy)
            m = keras_resnext.build({TINY}, input_shape=(32, 32, 3), classes=3,
                                    classifier_activation=None)
            m.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True), jit_compile=False)
            h = m.fit(x, np.array([0, 2]), epochs=2, batch_size=2, verbose=0)
            losses[policy] = [float(v) for v in h.history["loss"]]
            assert np.isfinite(losses[policy]).all(), (policy, losses[policy])
        keras.config.set_dtype_policy("float32")
        print(json.dumps(losses))
        print("RUNTIME-OK")
    """, onednn)
    assert "RUNTIME-OK" in out


EXPORT = f"""
    import json, sys
    import numpy as np
    import keras_resnext
    from keras_resnext import export
    from helpers import random_images

    keras.utils.set_random_seed(0)
    model = keras_resnext.build({TINY}, input_shape=(32, 32, 3), classes=3)
    for layer in model.layers:  # non-trivial BN statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-1, 1, layer.moving_mean.shape[0]))
            layer.moving_variance.assign(np.linspace(0.5, 2, layer.moving_variance.shape[0]))
    path = export.export_saved_model(model, sys.argv[1], model_name="tiny")
    images = random_images(4, 32)
    np.savez(sys.argv[1] + "/expected.npz", images=images,
             probabilities=np.asarray(model(keras_resnext.preprocess_input(images))))
    print(json.dumps({{"path": path}}))
"""

LOAD = """
    import json, sys
    import numpy as np, tensorflow as tf
    data = np.load(sys.argv[1] + "/expected.npz")
    loaded = tf.saved_model.load(json.loads(sys.argv[2])["path"])
    got = loaded.signatures["serving_default"](images=tf.constant(data["images"]))
    np.testing.assert_allclose(got["probabilities"].numpy(), data["probabilities"],
                               rtol=1e-5, atol=1e-6)
    ops = {node.op for f in loaded.signatures["serving_default"].graph.as_graph_def()
           .library.function for node in f.node_def}
    print(json.dumps(sorted(ops)))
    print("LOAD-OK")
"""


@pytest.mark.parametrize("writer,reader", [("1", "0"), ("0", "1")])
def test_saved_model_runs_on_the_other_runtime(writer, reader, tmp_path):
    """Exported where oneDNN is on (off), served where it is off (on): same numbers."""
    code = "import keras\n" + textwrap.dedent(EXPORT)
    env_code = f"import sys; sys.argv = ['x', {str(tmp_path)!r}]\n" + code
    written = run_child(env_code, writer).strip().splitlines()[-1]
    load = (f"import sys; sys.argv = ['x', {str(tmp_path)!r}, {written!r}]\n"
            + textwrap.dedent(LOAD))
    out = run_child(load, reader)
    assert "LOAD-OK" in out
    ops = json.loads(out.strip().splitlines()[-2])
    # One grouped Conv2D per GroupConv2D, fenced from the remapper by EnsureShape.
    assert "Conv2D" in ops and "EnsureShape" in ops and "_FusedConv2D" not in ops
