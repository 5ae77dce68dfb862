"""GroupConv2D's and DepthwiseConv2D's JAX and PyTorch graphs equal Keras' own layers.

Each backend runs in a child process with ``KERAS_BACKEND`` set (Keras picks
its backend once, at import), and with ``import tensorflow`` made to fail:
neither graph, nor the benchmark module, may need TensorFlow.
"""

import pytest

from helpers import GRADIENT_PARITY_CHILD
from helpers import run_backend_child

BACKENDS = ["jax", "torch"]


# Outputs and gradients (input, kernel, bias) of GroupConv2D vs Conv2D(groups) and of
# DepthwiseConv2D vs Keras' DepthwiseConv2D, per layer config and dtype policy: the largest
# difference relative to the largest magnitude. Autodiff is the backend's own (jax.grad /
# torch autograd).
PARITY = GRADIENT_PARITY_CHILD + """
    conv = dict(kernel_size=3, use_bias=True, bias_initializer="glorot_uniform")
    CASES = [  # (ours, Keras', in_channels, arguments)
        (L.GroupConv2D, keras.layers.Conv2D, 16,  # one super-group on JAX
         dict(filters=16, groups=4, padding="same", **conv)),
        (L.GroupConv2D, keras.layers.Conv2D, 64,  # several super-groups
         dict(filters=64, groups=16, padding="same", **conv)),
        (L.GroupConv2D, keras.layers.Conv2D, 64,  # one group per super-group, stride 2
         dict(filters=32, groups=32, strides=2, padding="valid", **conv)),
        (L.GroupConv2D, keras.layers.Conv2D, 32,  # asymmetric "same" (PyTorch: Keras' op)
         dict(filters=32, groups=8, strides=2, padding="same", **conv)),
        (L.GroupConv2D, keras.layers.Conv2D, 32,
         dict(filters=64, groups=4, dilation_rate=2, padding="same", **conv)),
        (L.DepthwiseConv2D, keras.layers.DepthwiseConv2D, 24, dict(padding="same", **conv)),
        (L.DepthwiseConv2D, keras.layers.DepthwiseConv2D, 24,
         dict(strides=2, padding="valid", depth_multiplier=2, **conv)),
        (L.DepthwiseConv2D, keras.layers.DepthwiseConv2D, 24,  # PyTorch: Keras' op
         dict(strides=2, padding="same", **conv)),
        (L.DepthwiseConv2D, keras.layers.DepthwiseConv2D, 24,
         dict(dilation_rate=2, padding="same", use_bias=False, kernel_size=3)),
    ]
    errors = {}
    for policy in POLICIES:
        keras.config.set_dtype_policy(policy)
        for i, (ours_cls, keras_cls, cin, kw) in enumerate(CASES):
            ours, theirs = ours_cls(**kw), keras_cls(**kw)
            rng = np.random.default_rng(i)
            x = rng.standard_normal((2, 11, 11, cin)).astype("float32")
            ours.build(x.shape); theirs.build(x.shape)
            theirs.set_weights(ours.get_weights())
            dy = rng.standard_normal(ours.compute_output_shape(x.shape)).astype("float32")
            pairs = zip(outputs_and_grads(ours, x, dy), outputs_and_grads(theirs, x, dy))
            errors[f"{policy} {ours_cls.__name__} {kw}"] = [relative(a, b) for a, b in pairs]
    print(json.dumps(errors))
"""


# Largest relative difference allowed per policy: float32 1e-5; mixed policies a few
# roundings of the compute dtype (bfloat16: 2^-8, float16: 2^-11).
TOLERANCES = {"float32": 1e-5, "mixed_bfloat16": 4 * 2.0**-8, "mixed_float16": 4 * 2.0**-11}


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_and_gradients_equal_keras_layers(backend):
    errors = run_backend_child(PARITY.replace("POLICIES", repr(list(TOLERANCES))), backend)
    assert len(errors) == 9 * len(TOLERANCES)
    for key, errs in errors.items():
        # output, input gradient, kernel gradient (and bias gradient)
        assert len(errs) == (3 if "'use_bias': False" in key else 4), key
        assert max(errs) < TOLERANCES[key.split()[0]], (key, errs)


def test_jax_graph_has_no_grouped_convolution():
    """XLA's CPU grouped convolutions (feature/batch_group_count > 1) are what is avoided."""
    out = run_backend_child("""
        import json, re
        import jax, keras, numpy as np
        from keras_resnext import layers as L

        found = {}
        grouped = dict(filters=64, kernel_size=3, padding="same", groups=16)
        depthwise = dict(kernel_size=3, padding="same")
        for cls, kw in ((L.GroupConv2D, grouped), (keras.layers.Conv2D, grouped),
                        (L.DepthwiseConv2D, depthwise),
                        (keras.layers.DepthwiseConv2D, depthwise)):
            layer = cls(**kw)
            x = np.ones((1, 8, 8, 64), "float32")
            layer.build(x.shape)
            fn = lambda w, x: layer.stateless_call(w, [], x)[0].sum()
            hlo = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(
                [v.value for v in layer.trainable_variables], x).as_text()
            counts = re.findall(r"(?:feature|batch)_group_count = (\\d+)", hlo)
            found[f"{cls.__module__.split('.')[0]}.{cls.__name__}"] = sorted(
                {int(n) for n in counts if int(n) > 1})
        print(json.dumps(found))
    """, "jax")
    # The probe sees Keras' grouped ops; ours have none.
    assert out["keras.Conv2D"] == [16] and out["keras.DepthwiseConv2D"] == [64], out
    assert out["keras_resnext.GroupConv2D"] == [] == out["keras_resnext.DepthwiseConv2D"], out


def test_torch_convolution_runs_on_the_input_without_copies():
    """conv2d gets the NHWC input's own memory, as a channels-last view."""
    out = run_backend_child("""
        import json
        import keras, torch
        from keras_resnext import grouped_ops

        x = torch.randn(2, 9, 9, 32)
        kernel = torch.randn(3, 3, 4, 32)
        reference = keras.ops.conv(x, kernel, padding="same")
        seen = []
        original = torch.nn.functional.conv2d

        def recording(inputs, *args, **kwargs):
            seen.append([inputs.data_ptr() == x.data_ptr(),
                         inputs.is_contiguous(memory_format=torch.channels_last)])
            return original(inputs, *args, **kwargs)

        torch.nn.functional.conv2d = recording
        args = dict(strides=(1, 1), dilation_rate=(1, 1), data_format="channels_last",
                    groups=8)
        same = grouped_ops.convolution(x, kernel, padding="same", **args)
        # Asymmetric "same" padding is left to Keras' own op (None).
        strided = grouped_ops.convolution(x, kernel, padding="same",
                                          **{**args, "strides": (2, 2)})
        print(json.dumps({"seen": seen, "strided": strided is None,
                          "error": float((same - reference).abs().max())}))
    """, "torch")
    assert out["seen"] == [[True, True]] and out["strided"]
    assert out["error"] < 1e-4


def test_grouped_ops_answers_none_on_other_backends():
    from keras_resnext import grouped_ops
    import keras

    if keras.backend.backend() in grouped_ops.BACKENDS:
        pytest.skip("runs under a backend without its own graph")
    assert grouped_ops.convolution(None, None, strides=(1, 1), padding="same",
                                   dilation_rate=(1, 1), data_format="channels_last",
                                   groups=2) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_model_equals_its_keras_conv2d_clone(backend):
    """A whole tiny ResNeXt, built and run without TensorFlow, vs Conv2D(groups)."""
    out = run_backend_child("""
        import json
        import keras, numpy as np
        import keras_resnext
        from keras_resnext import benchmark
        from helpers import TINY_SPEC, random_images

        ours = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
        theirs = benchmark.with_keras_grouped_conv(ours)
        theirs.set_weights(ours.get_weights())
        x = random_images(2, 32)
        a, b = (keras.ops.convert_to_numpy(m(x)) for m in (ours, theirs))
        print(json.dumps({"error": float(np.abs(a - b).max()),
                          "grouped": sum(getattr(l, "groups", 1) > 1 for l in ours.layers)}))
    """, backend)
    assert out["grouped"] >= 2
    assert out["error"] < 1e-5
