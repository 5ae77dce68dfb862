"""Optional dependencies, grouped as the package's extras (setup.cfg).

``pip install keras-resnext`` installs Keras and what building models and
loading weights need; Keras' backend is the user's choice, as with Keras
itself: the ``[tensorflow]``, ``[jax]`` and ``[torch]`` extras. Training and
export (TensorFlow programs) are extras too. A feature checks its extra before
any work (``require``), and ``import keras_resnext`` checks the backend Keras
is about to load (``check_backend``), so a missing one is one clear line, not
an ``ImportError`` deep in a run.
"""

import importlib.util
import json
import os
import sys

TENSORFLOW = {"tensorflow": "tensorflow"}
# extra -> {import name: distribution name}; setup.cfg lists the same distributions.
EXTRAS = {
    "tensorflow": TENSORFLOW,
    "jax": {"jax": "jax"},
    "torch": {"torch": "torch"},
    # tf.distribute, tf.data and TensorBoard: the training program is TensorFlow's.
    "train": {**TENSORFLOW, "tensorflow_datasets": "tensorflow-datasets",
              "tensorboard": "tensorboard", "sklearn": "scikit-learn",
              "matplotlib": "matplotlib"},
    "export": {**TENSORFLOW, "tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime",
               "ai_edge_litert": "ai-edge-litert",
               "tensorflow_serving": "tensorflow-serving-api", "openvino": "openvino"},
    "hub": {"keras_hub": "keras-hub"},
}


class MissingExtraError(ImportError):
    """An optional dependency of a feature is not installed."""


def missing(extra):
    """The distributions of ``extra`` whose modules cannot be imported."""
    return [dist for module, dist in EXTRAS[extra].items()
            if importlib.util.find_spec(module) is None]


def require(extra, feature):
    """Raises ``MissingExtraError`` unless every package of ``extra`` is installed.

    Args:
        extra: a key of ``EXTRAS`` (``"train"``, ``"export"``, ``"hub"``).
        feature: what needs it, for the message (e.g. ``"Training"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"Unknown extra. Received: extra={extra!r}. Known: {sorted(EXTRAS)}")
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{feature} needs the [{extra}] extra ({', '.join(absent)} not installed): "
            f"pip install 'keras-resnext[{extra}]'")


# Keras' backends; each one's import name is its name.
KERAS_BACKENDS = ("jax", "numpy", "openvino", "tensorflow", "torch")


def keras_backend():
    """The backend Keras loads, and where that choice comes from, without importing Keras.

    Keras' own order: ``KERAS_BACKEND``, else ``keras.json`` in ``KERAS_HOME``
    (default ``~/.keras``, or ``/tmp/.keras`` where home is not writable), else
    TensorFlow.

    Returns:
        ``(name, source)``, e.g. ``("torch", "KERAS_BACKEND=torch")``.
    """
    if "keras" in sys.modules:  # already loaded: its backend imported fine
        return sys.modules["keras"].config.backend(), "keras.config.backend()"
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
    home = os.path.expanduser("~")
    folder = os.environ["KERAS_HOME"] if "KERAS_HOME" in os.environ else os.path.join(
        home if os.access(home, os.W_OK) else "/tmp", ".keras")
    path = os.path.join(folder, "keras.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("backend", "tensorflow"), f"from {path}"
    except (OSError, ValueError):  # Keras too falls back to its default
        return "tensorflow", "Keras' default"


def check_backend():
    """Raises unless the backend Keras is about to load is installed.

    Raises:
        ValueError: not one of Keras' backends.
        MissingExtraError: its package cannot be imported; the message names the
            install command and the backends that are installed.
    """
    name, source = keras_backend()
    if name not in KERAS_BACKENDS:
        raise ValueError(f"Unknown Keras backend. Received: {name!r} ({source}). "
                         f"Accepted: {', '.join(KERAS_BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        install = (f"pip install 'keras-resnext[{name}]'" if name in EXTRAS
                   else f"pip install {name}")
        installed = [b for b in KERAS_BACKENDS
                     if b != name and b in EXTRAS and not missing(b)]
        alternative = (f", or set KERAS_BACKEND to an installed one ({', '.join(installed)})"
                       if installed else "")
        raise MissingExtraError(
            f"Keras backend {name!r} ({source}) is not installed: {install}{alternative}")
