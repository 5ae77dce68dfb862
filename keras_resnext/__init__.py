"""keras-resnext: ResNeXt (Xie et al., CVPR 2017) for Keras 3 / TensorFlow."""

from keras_resnext.convert import export_torch_weights
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

# The named factories, one per entry of FACTORIES (tests/test_factories.py).
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

