"""Optional dependencies, grouped as the package's extras (setup.cfg).

``pip install keras-resnext`` installs what building models and loading weights
need; training and export stacks are extras. A feature checks its extra before
any work (``require``), so a missing one is one clear line, not an
``ImportError`` deep in a run.
"""

import importlib.util

# extra -> {import name: distribution name}; setup.cfg lists the same distributions.
EXTRAS = {
    "train": {"tensorflow_datasets": "tensorflow-datasets", "keras_cv": "keras-cv",
              "tensorboard": "tensorboard", "sklearn": "scikit-learn",
              "matplotlib": "matplotlib"},
    "export": {"tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime",
               "ai_edge_litert": "ai-edge-litert",
               "tensorflow_serving": "tensorflow-serving-api"},
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
