"""Shared test helpers: small specs and a build/call/save round-trip harness."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_resnext  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# A ResNeXt small enough to build and run in well under a second.
TINY_SPEC = keras_resnext.Spec(
    depths=(1, 1), widths=(8, 16), cardinality=4, base_width=16, default_size=32)


@pytest.fixture
def tiny_spec():
    return TINY_SPEC


def random_images(n, size, seed=0, channels=3):
    """Deterministic 0-255 float32 NHWC images."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(n, size, size, channels)).astype("float32")


def assert_save_load_round_trip(model, x, tmp_path):
    """Saves ``model`` as .keras, reloads it, and checks identical outputs."""
    import keras

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(restored(x, training=False)))
    return restored
