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


def pytest_report_header(config):
    """The CPU kind and oneDNN state at the top of every test run."""
    from keras_resnext import benchmark

    m = benchmark.cpu_description()
    return [f"cpu: {m['cpu']}; flags: {' '.join(m['cpu_flags']) or 'none of avx2/avx512/amx'}",
            f"oneDNN: {'on' if m['onednn_enabled'] else 'off'} "
            f"(TF_ENABLE_ONEDNN_OPTS={m['onednn_setting']}); "
            "tests that depend on it run in subprocesses with both settings"]


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


# Tiny random timm models with reference logits (copied from shared/fixtures), by family.
FIXTURE_FAMILIES = {
    "resnext_tiny": "resnet",
    "resnext_tiny_d": "resnet",
    "resnest_tiny_d": "resnest",
    "resnest_tiny_4s2x": "resnest",
    "res2net_tiny": "res2net",
    "res2next_tiny_d": "res2net",
    "rexnet_tiny": "rexnet",
}


def load_fixture_config(name):
    """A fixture's JSON: timm's constructor arguments, input size, classes."""
    import json

    with open(os.path.join(FIXTURES, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def fixture_model(name, **kwargs):
    """The Keras model of a timm fixture (logits out) and the fixture's state dict."""
    from keras_resnext import convert
    from keras_resnext import families

    config = load_fixture_config(name)
    spec = families.families()[FIXTURE_FAMILIES[name]].Spec.from_config(config)
    kwargs.setdefault("classes", config["num_classes"])
    kwargs.setdefault("input_shape", (config["input_size"], config["input_size"], 3))
    model = keras_resnext.build(spec, name=name, classifier_activation=None, **kwargs)
    state_dict = convert.read_safetensors(os.path.join(FIXTURES, f"{name}.safetensors"))
    return model, state_dict


def count_trainable(model):
    """Trainable parameters, as timm/torchvision count them."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
