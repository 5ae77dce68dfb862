"""What an export is of: constants, model checks, artifact paths.

The evaluation transform baked into every artifact (a
``preprocessing.EvalTransform``) and the one ``images -> probabilities``
function, the checks of the model (run before any work) and the artifact
paths. The request is checked in ``request``; images are read in ``images``.
"""

import os

from keras_resnext import preprocessing
from keras_resnext.classifier import outputs_probabilities  # noqa: F401 (re-exported)
from keras_resnext import pretrained

FORMATS = ("saved_model", "tflite", "onnx", "openvino", "keras_hub")
# OpenVINO and keras_hub (the [hub] extra) are opt-in, as int8 is: the default
# export stays the three formats every deployment doc starts from.
DEFAULT_FORMATS = ("saved_model", "tflite", "onnx")
# Formats written from the model with BatchNorm folded into its convolutions
# (``fold_batch_norm``); the keras_hub preset, for training, keeps BatchNorm.
FOLDED_FORMATS = ("saved_model", "tflite", "onnx", "openvino")
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# "int8" needs calibration images, so it is opt-in.
DEFAULT_TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic")
IMAGE_EXTENSIONS = preprocessing.IMAGE_EXTENSIONS
# Signature names of the exported SavedModel (a contract with clients).
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serve_image_bytes"
# images -> probabilities only: what TFLite and ONNX are converted from.
SIGNATURE_PROBABILITIES = "predict_probabilities"
INPUT_IMAGES = "images"
INPUT_BYTES = "image_bytes"
OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_class_names")
MIN_INPUT_SIZE = 32
DEFAULT_TOP_K = 5
ONNX_MIN_OPSET = 17


def eval_transform_for(model, weights_entry=None):
    """The ``EvalTransform`` baked into ``model``'s exports.

    The weights entry's transform at the model's input size
    (``PretrainedWeights.eval_transform``), else timm's defaults (crop 0.875,
    bilinear, ImageNet mean/std).

    Args:
        model: a square, channels-last image classifier.
        weights_entry: a ``keras_resnext.pretrained.PretrainedWeights`` or None.

    Raises:
        ValueError: the model input is not a static square RGB image of at
            least ``MIN_INPUT_SIZE`` pixels.
    """
    return pretrained.eval_transform(weights_entry, model_input_size(model))


def probabilities_fn(model, transform):
    """The one ``images -> probabilities`` of every export and of its checks.

    Normalises eval-transformed 0-255 ``(N, S, S, 3)`` images with the
    transform's mean/std, runs ``model``, and applies a softmax unless the
    model ends in one. TF ops: usable eagerly, in a ``tf.function`` and in the
    SavedModel signatures.
    """
    import tensorflow as tf

    softmax_in_model = outputs_probabilities(model)

    def probabilities(images):
        out = model(transform.normalize(images), training=False)
        return out if softmax_in_model else tf.nn.softmax(out, axis=-1)

    return probabilities


def model_input_size(model):
    """Height (= width) of a channels-last ``(None, H, W, 3)`` model input.

    Raises:
        ValueError: dynamic, non-square, non-RGB or smaller than
            ``MIN_INPUT_SIZE`` input.
    """
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[3] != 3:
        raise ValueError(
            "Export needs a model with one channels-last RGB image input "
            f"(None, H, W, 3). Received: input_shape={model.input_shape}")
    _, h, w, _ = shape
    if h is None or w is None or h != w:
        raise ValueError(
            "Export needs a static square input size (build the model with "
            f"input_shape=(S, S, 3)). Received: input_shape={shape}")
    if h < MIN_INPUT_SIZE:
        raise ValueError(
            f"Input size too small to export: {h}x{w}; the smallest accepted is "
            f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}. Received: input_shape={shape}")
    return int(h)


def _num_classes(model):
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2 or shape[1] is None:
        raise ValueError(
            "Export needs a classifier with one (None, classes) output "
            "(build it with include_top=True). Received: "
            f"output_shape={shape}")
    return int(shape[1])


def resolve_class_names(num_classes, class_names=None):
    """Class names of the ``top_k_class_names`` output.

    ImageNet names for a 1000-class model, else ``class_names`` or
    ``"class_<i>"``.

    Raises:
        ValueError: ``class_names`` has the wrong length.
    """
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` must have one name per class ({num_classes}). "
                f"Received: {len(class_names)} names")
        return class_names
    if num_classes == 1000:
        return [name for _, name in preprocessing.imagenet_classes()]
    return [f"class_{i}" for i in range(num_classes)]


def check_model(model, weights_entry, class_names, top_k):
    """Checks a model for export; returns ``(transform, class_names, top_k)``.

    Raises:
        ValueError: see ``model_input_size``, a model that is not a
            classifier, wrong ``class_names`` or a bad ``top_k``.
    """
    transform = eval_transform_for(model, weights_entry)
    num_classes = _num_classes(model)
    outputs_probabilities(model)
    class_names = resolve_class_names(num_classes, class_names)
    check_top_k(top_k)
    return transform, class_names, min(top_k, num_classes)


def check_top_k(top_k):
    """Raises ``ValueError`` unless ``top_k`` is a positive integer."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")


def artifact_paths(out_dir, model_name, version, formats, tflite_quantizations=()):
    """Final paths of the artifacts of one export, in report order."""
    paths = []
    if "saved_model" in formats:
        paths.append(os.path.join(out_dir, model_name, str(version)))
    if "tflite" in formats:
        paths += [tflite_path(out_dir, model_name, version, q)
                  for q in tflite_quantizations]
    if "onnx" in formats:
        paths.append(os.path.join(out_dir, f"{model_name}-{version}.onnx"))
    if "openvino" in formats:
        paths += openvino_paths(out_dir, model_name, version)
    if "keras_hub" in formats:
        paths.append(keras_hub_path(out_dir, model_name, version))
    return paths


def tflite_path(out_dir, model_name, version, quantization):
    return os.path.join(out_dir, f"{model_name}-{version}.{quantization}.tflite")


def openvino_paths(out_dir, model_name, version):
    """The OpenVINO IR: ``.xml`` (graph) and ``.bin`` (weights), same stem."""
    stem = os.path.join(out_dir, f"{model_name}-{version}.openvino")
    return [f"{stem}.xml", f"{stem}.bin"]


def keras_hub_path(out_dir, model_name, version):
    """The keras-hub preset folder of an export."""
    return os.path.join(out_dir, f"{model_name}-{version}-keras_hub")
