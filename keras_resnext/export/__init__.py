"""Export for deployment: SavedModel for TF Serving, TFLite variants, ONNX, OpenVINO, keras-hub preset.

Every artifact is verified against the Keras model it came from, and the
numbers go into ``<out>/export_report.json`` (+ ``export_report.md``). The
SavedModel and the formats converted from it are written with BatchNorm
folded into the convolutions (``fold_batch_norm=False`` keeps it).

Layout of ``out_dir`` (TF Serving watches ``<out>/<model_name>/<version>``)::

    <out>/models.config                       # TF Serving model_config_list
    <out>/<model_name>/<version>/             # SavedModel + assets.extra/
    <out>/<model_name>-<version>.<quantization>.tflite
    <out>/<model_name>-<version>.onnx
    <out>/<model_name>-<version>.openvino.xml, .openvino.bin
    <out>/<model_name>-<version>-keras_hub/   # keras-hub preset (opt-in format)
    <out>/export_report.json, export_report.md

Atomicity: everything is written into a hidden staging directory inside
``out_dir`` (``.export-*``; TF Serving only loads numeric version directories
under a model's base path, so it never sees it) and renamed into place at the
end. An interrupted export removes its staging directory and leaves no
version directory behind.

Grouped convolutions must not be XLA-must-compile functions (Keras 3 compiles
``Conv2D(groups=C)`` with ``jit_compile=True`` under TensorFlow; tf2onnx and TF
Serving cannot handle that): ``find_xla_functions`` inspects a SavedModel and
the export refuses a model that has any. ``GroupConv2D`` models are clean.

Modules: ``config`` (constants, the evaluation transform, the one ``images ->
probabilities`` function, checks of the model, artifact paths), ``request``
(``ExportRequest``: what to write, checked once when made), ``images``
(calibration/validation images from folders or tfds), ``saved_model`` (the
TF Serving SavedModel, warmup, ``models.config``, the XLA check),
``tflite``, ``onnx``, ``openvino`` and ``keras_hub`` (conversion and runners), ``report``
(verification numbers and the report), ``staging`` (atomic writes) and ``pipeline``
(``export``, ``export_request``, ``export_by_name``). They use each other's public names only;
the package re-exports what users call.
"""

from keras_resnext.export.config import DEFAULT_FORMATS
from keras_resnext.export.config import DEFAULT_TFLITE_QUANTIZATIONS
from keras_resnext.export.config import DEFAULT_TOP_K
from keras_resnext.export.config import FORMATS
from keras_resnext.export.config import IMAGE_EXTENSIONS
from keras_resnext.export.config import INPUT_BYTES
from keras_resnext.export.config import INPUT_IMAGES
from keras_resnext.export.config import MIN_INPUT_SIZE
from keras_resnext.export.config import ONNX_MIN_OPSET
from keras_resnext.export.config import OUTPUTS
from keras_resnext.export.config import SIGNATURE_BYTES
from keras_resnext.export.config import SIGNATURE_IMAGES
from keras_resnext.export.config import SIGNATURE_PROBABILITIES
from keras_resnext.export.config import TFLITE_QUANTIZATIONS
from keras_resnext.export.config import artifact_paths
from keras_resnext.export.config import eval_transform_for
from keras_resnext.export.config import keras_hub_path
from keras_resnext.export.config import model_input_size
from keras_resnext.export.config import openvino_paths
from keras_resnext.export.config import probabilities_fn
from keras_resnext.export.config import resolve_class_names
from keras_resnext.export.config import tflite_path
from keras_resnext.export.images import ImageSource
from keras_resnext.export.images import list_images
from keras_resnext.export.images import load_images
from keras_resnext.export.images import load_tfds_images
from keras_resnext.export.images import parse_tfds_source
from keras_resnext.export.onnx import convert_onnx
from keras_resnext.export.onnx import onnx_grouped_convs
from keras_resnext.export.onnx import onnx_runner
from keras_resnext.export.openvino import convert_openvino
from keras_resnext.export.openvino import openvino_grouped_convs
from keras_resnext.export.openvino import openvino_runner
from keras_resnext.export.pipeline import export
from keras_resnext.export.pipeline import export_by_name
from keras_resnext.export.pipeline import export_request
from keras_resnext.export.pipeline import weights_entry_for
from keras_resnext.export.report import AGREEMENT_TARGET
from keras_resnext.export.report import NOISE_FLOOR_FACTOR
from keras_resnext.export.report import REPORT_JSON
from keras_resnext.export.report import REPORT_MD
from keras_resnext.export.report import TOLERANCES
from keras_resnext.export.report import report_markdown
from keras_resnext.export.request import ExportRequest
from keras_resnext.export.request import validate_request
from keras_resnext.export.saved_model import MODELS_CONFIG
from keras_resnext.export.saved_model import WARMUP_FILE
from keras_resnext.export.saved_model import export_saved_model
from keras_resnext.export.saved_model import find_xla_functions
from keras_resnext.export.saved_model import float32_model
from keras_resnext.export.saved_model import run_saved_model_in_subprocess
from keras_resnext.export.saved_model import warmup_requests
from keras_resnext.export.saved_model import write_conversion_source
from keras_resnext.export.saved_model import write_models_config
from keras_resnext.export.tflite import convert_tflite
from keras_resnext.export.tflite import tflite_op_names
from keras_resnext.export.tflite import tflite_runner

__all__ = [
    "AGREEMENT_TARGET", "ExportRequest", "ImageSource", "DEFAULT_FORMATS", "DEFAULT_TFLITE_QUANTIZATIONS", "DEFAULT_TOP_K",
    "FORMATS",
    "IMAGE_EXTENSIONS", "INPUT_BYTES", "INPUT_IMAGES", "MIN_INPUT_SIZE", "MODELS_CONFIG",
    "NOISE_FLOOR_FACTOR", "ONNX_MIN_OPSET", "OUTPUTS", "REPORT_JSON", "REPORT_MD",
    "SIGNATURE_BYTES", "SIGNATURE_IMAGES", "SIGNATURE_PROBABILITIES",
    "TFLITE_QUANTIZATIONS", "TOLERANCES", "WARMUP_FILE", "artifact_paths",
    "convert_onnx", "convert_openvino", "convert_tflite", "eval_transform_for", "export",
    "export_by_name", "export_request", "export_saved_model", "find_xla_functions", "float32_model",
    "keras_hub_path",
    "list_images", "load_images", "load_tfds_images", "model_input_size",
    "onnx_grouped_convs", "onnx_runner", "openvino_grouped_convs", "openvino_paths",
    "openvino_runner", "parse_tfds_source", "probabilities_fn",
    "report_markdown",
    "resolve_class_names", "run_saved_model_in_subprocess", "tflite_op_names",
    "tflite_path", "tflite_runner", "validate_request", "warmup_requests",
    "weights_entry_for", "write_conversion_source", "write_models_config"
]
