"""PointwiseConv2D: a dense 1x1 convolution as a matrix product on JAX, equal to Keras' Conv2D.

Children with ``KERAS_BACKEND`` set and TensorFlow hidden, as tests/test_grouped_ops.py.
"""

import pytest

from helpers import GRADIENT_PARITY_CHILD
from helpers import run_backend_child

# Outputs and gradients (input, kernel, bias) of PointwiseConv2D vs keras.layers.Conv2D, per
# config and dtype policy (largest difference relative to the largest magnitude), and
# whether the JAX graph of the 1x1 layer's gradients still holds a convolution.
PARITY = GRADIENT_PARITY_CHILD + """
    def has_convolution(layer, x):
        import jax
        fn = lambda w, x: layer.stateless_call(w, [], x)[0].astype("float32").sum()
        hlo = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(
            [v.value for v in layer.trainable_variables], x).as_text()
        return "convolution" in hlo

    CASES = [  # (in_channels, size, arguments)
        (16, 9, dict(filters=24, kernel_size=1, use_bias=True, bias_initializer="glorot_uniform",
                     activation="relu")),
        (16, 9, dict(filters=8, kernel_size=1, strides=2, padding="same",  # odd size
                     use_bias=False)),
        (16, 10, dict(filters=8, kernel_size=1, strides=2, padding="valid", use_bias=False)),
        (8, 7, dict(filters=8, kernel_size=3, padding="same",  # not 1x1: Keras' op
                    use_bias=False)),
    ]
    out = {}
    for policy in POLICIES:
        keras.config.set_dtype_policy(policy)
        for i, (cin, size, kw) in enumerate(CASES):
            ours, theirs = L.PointwiseConv2D(**kw), keras.layers.Conv2D(**kw)
            rng = np.random.default_rng(i)
            x = rng.standard_normal((2, size, size, cin)).astype("float32")
            ours.build(x.shape); theirs.build(x.shape)
            theirs.set_weights(ours.get_weights())
            dy = rng.standard_normal(ours.compute_output_shape(x.shape)).astype("float32")
            pairs = zip(outputs_and_grads(ours, x, dy), outputs_and_grads(theirs, x, dy))
            key = f"{policy} {kw}"
            out[key] = {"errors": [relative(a, b) for a, b in pairs]}
            if backend == "jax":
                out[key]["convolution"] = has_convolution(ours, x)
    print(json.dumps(out))
"""

TOLERANCES = {"float32": 1e-5, "mixed_bfloat16": 4 * 2.0**-8, "mixed_float16": 4 * 2.0**-11}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_outputs_and_gradients_equal_keras_conv2d(backend):
    out = run_backend_child(PARITY.replace("POLICIES", repr(list(TOLERANCES))), backend)
    assert len(out) == 4 * len(TOLERANCES)
    for key, got in out.items():
        # output, input gradient, kernel gradient (and bias gradient)
        assert len(got["errors"]) == (4 if "'use_bias': True" in key else 3), key
        assert max(got["errors"]) < TOLERANCES[key.split()[0]], (key, got)
        if backend == "jax":
            # XLA's CPU convolution is what the 1x1 avoids; a 3x3 keeps it.
            assert got["convolution"] == ("'kernel_size': 3" in key), (key, got)


def test_families_build_their_dense_1x1_convolutions_as_pointwise():
    import keras
    import keras_resnext
    from keras_resnext import layers as L
    from helpers import TINY_SPEC

    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    pointwise = [l for l in convs if isinstance(l, L.PointwiseConv2D)]
    assert pointwise and all(tuple(l.kernel_size) == (1, 1) and l.groups == 1
                             for l in pointwise)
    assert all(isinstance(l, (L.PointwiseConv2D, L.GroupConv2D))
               for l in convs if tuple(l.kernel_size) == (1, 1))
