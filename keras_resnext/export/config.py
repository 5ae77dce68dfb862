"""What an export is of and how it is asked for: checks, constants, images.

The evaluation transform baked into every artifact (a
``preprocessing.EvalTransform``) and the one ``images -> probabilities``
function, the checks of the model and of an export request (run before any
work), the artifact paths, and the loading of calibration/validation images.
"""

import os

import numpy as np

from keras_resnext import extras
from keras_resnext import files
from keras_resnext import preprocessing
from keras_resnext.classifier import outputs_probabilities  # noqa: F401 (re-exported)
from keras_resnext import pretrained

FORMATS = ("saved_model", "tflite", "onnx", "openvino", "keras_hub")
# OpenVINO and keras_hub (the [hub] extra) are opt-in, as int8 is: the default
# export stays the three formats every deployment doc starts from.
DEFAULT_FORMATS = ("saved_model", "tflite", "onnx")
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
    if not isinstance(top_k, int) or not 1 <= top_k:
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")
    return transform, class_names, min(top_k, num_classes)


def as_names(value):
    """A format/quantization list; one bare string counts as one name."""
    return (value,) if isinstance(value, str) else tuple(value)


def validate_request(out_dir, *, model_name, version=1, formats=("saved_model",),
                     tflite_quantizations=(), overwrite=False, onnx_opset=ONNX_MIN_OPSET):
    """Checks an export request before any work, cheaply.

    Looks at paths only, and opens a nameless temporary file in ``out_dir``
    (or its nearest existing parent) to check that it is writable.

    Args:
        out_dir: output directory (created if missing; must not be a file).
        model_name: TF Serving model name (a single path component).
        version: positive integer version.
        formats: subset of ``FORMATS``.
        tflite_quantizations: subset of ``TFLITE_QUANTIZATIONS``.
        overwrite: allow replacing an existing version.
        onnx_opset: ONNX opset (>= ``ONNX_MIN_OPSET``).

    Raises:
        ValueError: on any bad value; the message says what was received and
            what is accepted.
        PermissionError: ``out_dir`` cannot be written (``files.check_writable_dir``).
        extras.MissingExtraError: the [export] extra is not installed.
    """
    extras.require("export", "Export")
    formats, tflite_quantizations = as_names(formats), as_names(tflite_quantizations)
    if "keras_hub" in formats:
        extras.require("hub", "Export format 'keras_hub'")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(
            f"Unknown export format(s) {bad or formats!r}. Accepted: {FORMATS}")
    bad = [q for q in tflite_quantizations if q not in TFLITE_QUANTIZATIONS]
    if bad:
        raise ValueError(
            f"Unknown TFLite quantization(s) {bad!r}. Accepted: {TFLITE_QUANTIZATIONS}")
    if "tflite" in formats and not tflite_quantizations:
        raise ValueError(
            "Format 'tflite' needs at least one quantization. Accepted: "
            f"{TFLITE_QUANTIZATIONS}")
    if (not isinstance(model_name, str) or not model_name or
            model_name.startswith(".") or os.sep in model_name or "/" in model_name):
        raise ValueError(
            "`model_name` must be a non-empty file name without '/' that does not "
            f"start with '.'. Received: model_name={model_name!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            "`version` must be a positive integer (TF Serving version directory). "
            f"Received: version={version!r}")
    if not isinstance(onnx_opset, int) or onnx_opset < ONNX_MIN_OPSET:
        raise ValueError(
            f"`onnx_opset` must be an integer >= {ONNX_MIN_OPSET}. "
            f"Received: onnx_opset={onnx_opset!r}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(
            f"The output path is a file, not a directory. Received: out_dir={out_dir!r}")
    files.check_writable_dir(out_dir, name="out_dir")
    base = os.path.join(out_dir, model_name)
    if os.path.exists(base) and not os.path.isdir(base):
        raise ValueError(
            f"The model base path {base!r} exists and is a file; TF Serving needs "
            "a directory there.")
    if not overwrite:
        existing = [p for p in artifact_paths(out_dir, model_name, version, formats,
                                              tflite_quantizations)
                    if os.path.exists(p)]
        if existing:
            raise ValueError(
                f"Version {version} of {model_name!r} already exists ({existing[0]}). "
                "Pass overwrite=True (--overwrite) to replace it, or choose another "
                "version.")


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


# --------------------------------------------------------------------------
# Calibration / validation images.


def list_images(directory):
    """Sorted image files of a folder (not recursive), checked to be readable.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: not a directory, unreadable, or holds no image file.
    """
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise FileNotFoundError(f"Calibration folder not found: {directory!r}")
    if not os.path.isdir(directory):
        raise ValueError(f"Calibration path is not a folder: {directory!r}")
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise ValueError(f"Calibration folder is unreadable: {directory!r} ({e})") from e
    files = [os.path.join(directory, n) for n in names
             if n.lower().endswith(IMAGE_EXTENSIONS)
             and os.path.isfile(os.path.join(directory, n))]
    if not files:
        raise ValueError(
            f"Calibration folder {directory!r} holds no image file; accepted "
            f"extensions: {IMAGE_EXTENSIONS}")
    for path in files:
        if not os.access(path, os.R_OK):
            raise ValueError(f"Calibration image is unreadable: {path!r}")
    return files


def load_images(directory, transform, *, limit=None):
    """Decodes and eval-transforms the images of a folder.

    Args:
        directory: folder of JPEG/PNG/BMP/GIF files.
        transform: the ``EvalTransform`` (size, crop, interpolation).
        limit: keep the first ``limit`` files (sorted by name).

    Returns:
        ``(N, size, size, 3)`` float32 array of 0-255 pixels.

    Raises:
        FileNotFoundError, ValueError: see ``list_images``; ``ValueError``
            names a file that cannot be decoded.
    """
    import tensorflow as tf

    files = list_images(directory)[:limit]
    images = []
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        except (OSError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f"Cannot decode calibration image {path!r}: {e}") from None
        images.append(_resize_crop(image, transform))
    return np.stack(images)


def load_tfds_images(name, split, transform, *, limit=100, data_dir=None):
    """Eval-transformed images from a tensorflow-datasets split.

    Args:
        name: dataset name (e.g. ``"imagenet2012"``, ``"imagenette"``).
        split: split, e.g. ``"validation[:200]"``.
        transform: the ``EvalTransform``.
        limit: number of images.
        data_dir: tfds data directory.

    Returns:
        ``(N, size, size, 3)`` float32 array of 0-255 pixels.
    """
    import tensorflow_datasets as tfds

    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    images = [_resize_crop(ex["image"], transform) for ex in ds.take(limit)]
    if not images:
        raise ValueError(f"tfds split {name}:{split} yielded no image")
    return np.stack(images)


def _resize_crop(image, transform):
    if image.shape[-1] == 1:
        import tensorflow as tf
        image = tf.image.grayscale_to_rgb(image)
    return transform.resize_crop(image).numpy()


def parse_tfds_source(source):
    """``"name:split"`` -> ``(name, split)``.

    Raises:
        ValueError: no ``:`` or an empty part.
    """
    name, sep, split = str(source).partition(":")
    if not sep or not name or not split:
        raise ValueError(
            "A tfds source must be 'name:split', e.g. 'imagenet2012:validation[:500]'. "
            f"Received: {source!r}")
    return name, split
