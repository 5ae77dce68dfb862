"""keras-resnext: ResNeXt (Xie et al., CVPR 2017) for Keras 3, on every Keras backend.

Importing the package imports none of its modules, so ``import keras_resnext.cli``
starts no TensorFlow. The first public name used (``keras_resnext.build``, ...)
imports them all (PEP 562 ``__getattr__``), which also registers the package's
Keras layers for ``keras.saving.load_model``; where Keras is imported already, that
happens at once.
"""

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Before anything imports Keras: a backend that is not installed is one line naming
# the install command (Keras itself fails deep inside its import). ``extras`` imports
# neither Keras nor TensorFlow.
from keras_resnext import extras as _extras  # noqa: E402

_extras.check_backend()

if TYPE_CHECKING:  # what IDEs, type checkers and API docs read; the same as __all__
    from keras_resnext.convert import export_torch_weights
    from keras_resnext.folding import fold_batch_norm
    from keras_resnext.layers import BatchNorm
    from keras_resnext.layers import GroupConv2D
    from keras_resnext.model import FACTORIES
    from keras_resnext.model import build
    from keras_resnext.model import count_macs
    from keras_resnext.model import create_model
    from keras_resnext.model import list_models
    from keras_resnext.model import pyramid_model
    from keras_resnext.preprocessing import decode_predictions
    from keras_resnext.preprocessing import eval_transform
    from keras_resnext.preprocessing import preprocess_input
    from keras_resnext.specs import VARIANTS
    from keras_resnext.specs import Spec
    from keras_resnext.specs import get_spec
    from keras_resnext.classifier import build_classifier
    from keras_resnext.preprocessing import EvalTransform
    from keras_resnext.pretrained import get_pretrained
    from keras_resnext.weights import load_weights
    from keras_resnext.applications import ResNeXt50
    from keras_resnext.applications import ResNeXt101
    from keras_resnext.applications import ResNeXt101_32x8d
    from keras_resnext.applications import ResNeXt101_64x4d
    from keras_resnext.applications import ResNeXt50D
    from keras_resnext.applications import ResNeXt29_8x64d
    from keras_resnext.applications import ResNeXt29_16x64d
    from keras_resnext.applications import ResNet50
    from keras_resnext.applications import ResNet101
    from keras_resnext.applications import ResNet152
    from keras_resnext.applications import ResNeSt14D
    from keras_resnext.applications import ResNeSt26D
    from keras_resnext.applications import ResNeSt50
    from keras_resnext.applications import ResNeSt101
    from keras_resnext.applications import ResNeSt200
    from keras_resnext.applications import ResNeSt269
    from keras_resnext.applications import Res2Net50
    from keras_resnext.applications import Res2Net101
    from keras_resnext.applications import Res2NeXt50
    from keras_resnext.applications import Res2Net50D
    from keras_resnext.applications import Res2Net101D
    from keras_resnext.applications import ReXNet100
    from keras_resnext.applications import ReXNet130
    from keras_resnext.applications import ReXNet150
    from keras_resnext.applications import ReXNet200
    from keras_resnext.applications import ReXNet300

__all__ = [
    "BatchNorm",
    "EvalTransform",
    "FACTORIES",
    "GroupConv2D",
    "Spec",
    "VARIANTS",
    "build",
    "build_classifier",
    "count_macs",
    "create_model",
    "decode_predictions",
    "eval_transform",
    "export_torch_weights",
    "fold_batch_norm",
    "get_pretrained",
    "get_spec",
    "list_models",
    "load_weights",
    "preprocess_input",
    "pyramid_model",
    "ResNeXt50",
    "ResNeXt101",
    "ResNeXt101_32x8d",
    "ResNeXt101_64x4d",
    "ResNeXt50D",
    "ResNeXt29_8x64d",
    "ResNeXt29_16x64d",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNeSt14D",
    "ResNeSt26D",
    "ResNeSt50",
    "ResNeSt101",
    "ResNeSt200",
    "ResNeSt269",
    "Res2Net50",
    "Res2Net101",
    "Res2NeXt50",
    "Res2Net50D",
    "Res2Net101D",
    "ReXNet100",
    "ReXNet130",
    "ReXNet150",
    "ReXNet200",
    "ReXNet300",
]

# The modules that define the names of ``__all__``.
_MODULES = ("convert", "folding", "layers", "model", "preprocessing", "specs", "classifier",
            "pretrained", "weights", "applications")
_loading = False


def _load():
    """Imports every public module and binds every name of ``__all__`` here."""
    global _loading
    _loading = True
    try:
        modules = [importlib.import_module(f"{__name__}.{m}") for m in _MODULES]
        for name in __all__:
            globals()[name] = next(vars(m)[name] for m in modules if name in vars(m))
    finally:
        _loading = False


def __getattr__(name):
    if name in __all__ and not _loading:
        _load()
        return globals()[name]
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f"{__name__}.{name}")  # a submodule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


if "keras" in sys.modules:  # registering the layers costs nothing more then
    _load()
