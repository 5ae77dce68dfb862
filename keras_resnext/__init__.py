"""keras-resnext: ResNeXt (Xie et al., CVPR 2017) for Keras 3, on every Keras backend."""

# Before anything imports Keras: a backend that is not installed is one line naming
# the install command (Keras itself fails deep inside its import).
from keras_resnext import extras as _extras

_extras.check_backend()

from keras_resnext.convert import export_torch_weights
from keras_resnext.layers import BatchNorm
from keras_resnext.layers import GroupConv2D
from keras_resnext import model as _model
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

# The named factories (``ResNeXt50``, ``ResNeSt50``, ``Res2Net50``, ``ReXNet100``,
# ...), one per entry of the families' FACTORIES.
globals().update({name: getattr(_model, name) for name in FACTORIES})

__version__ = "0.1.0"

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
    "get_pretrained",
    "get_spec",
    "list_models",
    "load_weights",
    "preprocess_input",
    "pyramid_model",
    *sorted(FACTORIES),
]
