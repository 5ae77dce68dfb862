"""``channels_first``: every family gives the channels_last outputs on transposed input.

Each check runs in a child process that sets ``image_data_format`` itself, so the
global setting of this process is never changed. TensorFlow's CPU kernels for
NCHW convolutions exist only with oneDNN: without it Keras' own ``Conv2D``
cannot run channels_first on a CPU either, and the check asserts that the
package fails the same way (a limit of the runtime, not of the package).
"""

import json
import textwrap

import keras
import numpy as np
import pytest

import keras_resnext

from helpers import TINY_SPEC
from helpers import random_images
from helpers import run_child

RESULT = "RESULT "

CHILD = """
    import json
    import keras
    import numpy as np
    import keras_resnext
    from keras_resnext import families
    from helpers import FIXTURE_FAMILIES, inference, load_fixture_config, random_images
    from helpers import randomize_batch_norms

    def build(spec, size, data_format):
        keras.config.set_image_data_format(data_format)
        shape = (3, size, size) if data_format == "channels_first" else (size, size, 3)
        return keras_resnext.build(spec, input_shape=shape, classes=5,
                                   classifier_activation=None)

    def keras_conv_runs_channels_first():
        keras.config.set_image_data_format("channels_first")
        try:
            keras.layers.Conv2D(4, 3)(np.zeros((1, 3, 8, 8), "float32"))
            return True, None
        except Exception as e:  # the runtime's own error, e.g. UnimplementedError
            return False, type(e).__name__

    supported, keras_error = keras_conv_runs_channels_first()
    result = {"supported": supported, "keras_error": keras_error, "families": {}}
    for name, family in FIXTURE_FAMILIES.items():
        config = load_fixture_config(name)
        spec = families.families()[family].Spec.from_config(config)
        size = config["input_size"]
        last = build(spec, size, "channels_last")
        randomize_batch_norms(last)  # non-trivial BN statistics
        x = random_images(2, size) / 255.0
        want = inference(last, x)
        first = build(spec, size, "channels_first")
        assert first.input_shape == (None, 3, size, size), first.input_shape
        first.set_weights(last.get_weights())
        try:
            got = inference(first, np.transpose(x, (0, 3, 1, 2)))
            result["families"][name] = float(np.abs(got - want).max())
        except Exception as e:
            result["families"][name] = type(e).__name__
    print("RESULT " + json.dumps(result))
"""


def channels_first_result(onednn, backend="tensorflow"):
    """The child's max abs differences by fixture (or the error each raised)."""
    code = f"import os\nos.environ['KERAS_BACKEND'] = {backend!r}\n" + textwrap.dedent(CHILD)
    out = run_child(code, onednn)
    return json.loads(out.split(RESULT, 1)[1].splitlines()[0])


@pytest.fixture
def image_data_format():
    """Sets Keras' global image data format; the previous one is restored afterwards."""
    previous = keras.config.image_data_format()
    yield keras.config.set_image_data_format
    keras.config.set_image_data_format(previous)


def test_tiny_resnext_matches_channels_last_in_this_process(image_data_format):
    """The quick check, on this process' runtime (oneDNN as the host sets it)."""
    image_data_format("channels_last")
    keras.utils.set_random_seed(0)
    last = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=5)
    x = random_images(2, 32) / 255.0
    want = np.asarray(last(x, training=False))
    image_data_format("channels_first")
    first = keras_resnext.build(TINY_SPEC, input_shape=(3, 32, 32), classes=5)
    first.set_weights(last.get_weights())
    x_first = np.transpose(x, (0, 3, 1, 2))
    try:
        keras.layers.Conv2D(4, 3)(x_first)
    except Exception as e:  # no NCHW convolution on this runtime (TF CPU without oneDNN)
        with pytest.raises(type(e)):
            first(x_first, training=False)
        return
    np.testing.assert_allclose(np.asarray(first(x_first, training=False)), want, atol=1e-5)


@pytest.mark.slow  # three child processes, each building seven fixtures twice
@pytest.mark.parametrize("backend, onednn", [("tensorflow", "1"), ("tensorflow", "0"),
                                             ("jax", "0")])
def test_every_family_matches_channels_last(backend, onednn):
    result = channels_first_result(onednn, backend)
    assert len(result["families"]) == 7
    if backend == "tensorflow" and onednn == "1":
        assert result["supported"]  # oneDNN runs NCHW convolutions on a CPU
    if result["supported"]:
        for name, diff in result["families"].items():
            assert isinstance(diff, float) and diff <= 1e-5, (name, diff)
    else:
        # Keras' own Conv2D fails here: every family fails with the same error.
        assert set(result["families"].values()) == {result["keras_error"]}, result
