"""Export for deployment: SavedModel for TF Serving, TFLite variants, ONNX.

Every artifact is verified against the Keras model it came from, and the
numbers go into ``<out>/export_report.json`` (+ ``export_report.md``).

Layout of ``out_dir`` (TF Serving watches ``<out>/<model_name>/<version>``)::

    <out>/models.config                       # TF Serving model_config_list
    <out>/<model_name>/<version>/             # SavedModel + assets.extra/
    <out>/<model_name>-<version>.<quantization>.tflite
    <out>/<model_name>-<version>.onnx
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
"""

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_resnext import preprocessing
from keras_resnext.preprocessing import IMAGENET_MEAN
from keras_resnext.preprocessing import IMAGENET_STD

FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# "int8" needs calibration images, so it is opt-in.
DEFAULT_TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Signature names of the exported SavedModel (a contract with clients).
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serve_image_bytes"
# images -> probabilities only: what TFLite and ONNX are converted from.
SIGNATURE_PROBABILITIES = "predict_probabilities"
INPUT_IMAGES = "images"
INPUT_BYTES = "image_bytes"
OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_class_names")
MIN_INPUT_SIZE = 32
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
DEFAULT_TOP_K = 5
ONNX_MIN_OPSET = 17
# Max abs difference on probabilities against the Keras model.
TOLERANCES = {
    "saved_model": 1e-5,
    "tflite_float32": 1e-4,
    "tflite_float16": 1e-2,
    "onnx": 1e-4,
}
# The Keras model itself, run as a graph (tf.function) instead of eagerly,
# differs from its eager run by float32 rounding (7e-6 on the probabilities of
# a trained ResNeXt-50). A float tolerance is never tighter than this many
# times that measured floor, so an exact export of a deep model is not failed
# for rounding that Keras shows against itself.
NOISE_FLOOR_FACTOR = 2.0
# Top-1 agreement target of quantized variants (issue 4: with pretrained
# weights on natural images).
AGREEMENT_TARGET = 0.98
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"
REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"
_STAGING_PREFIX = ".export-"
_XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_noinline_xla")
_XLA_OPS = ("XlaLaunch", "_XlaCompile", "_XlaRun", "XlaCallModule")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The evaluation transform and normalisation baked into the exports.

    Attributes:
        size: model input height and width.
        crop_pct: center-crop fraction (resize the short side to
            ``floor(size / crop_pct)`` first).
        interpolation: resize interpolation.
        mean: per-channel mean of 0-1 pixels.
        std: per-channel std of 0-1 pixels.
    """

    size: int
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = DEFAULT_INTERPOLATION
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def eval_config(model, weights_entry=None):
    """The evaluation transform for ``model``, from its weights entry if any.

    The crop fraction is the entry's ``test_crop_pct`` when the model runs at
    the entry's ``test_input_size``, else its ``crop_pct``. Without an entry:
    crop 0.875, bilinear, ImageNet mean/std.

    Args:
        model: a square, channels-last image classifier.
        weights_entry: a ``keras_resnext.weights.PretrainedWeights`` or None.

    Returns:
        An ``EvalConfig``.

    Raises:
        ValueError: the model input is not a static square RGB image of at
            least ``MIN_INPUT_SIZE`` pixels.
    """
    return config_for_size(model_input_size(model), weights_entry)


def config_for_size(size, weights_entry=None):
    """``EvalConfig`` at ``size`` pixels; see ``eval_config``."""
    if weights_entry is None:
        return EvalConfig(size=size)
    crop_pct = (weights_entry.test_crop_pct if size == weights_entry.test_input_size
                else weights_entry.crop_pct)
    return EvalConfig(size=size, crop_pct=crop_pct,
                      interpolation=weights_entry.interpolation,
                      mean=tuple(weights_entry.mean), std=tuple(weights_entry.std))


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


def _outputs_probabilities(model):
    """Whether the model ends in a softmax (else it returns logits)."""
    import keras

    activation = getattr(model.layers[-1], "activation", None)
    if activation is keras.activations.softmax:
        return True
    if activation in (None, keras.activations.linear):
        return False
    raise ValueError(
        "Export needs a classifier ending in softmax or in logits "
        "(classifier_activation='softmax' or None). Received: final activation "
        f"{getattr(activation, '__name__', activation)!r}")


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


def _names(value):
    """A format/quantization list; one bare string counts as one name."""
    return (value,) if isinstance(value, str) else tuple(value)


def validate_request(out_dir, *, model_name, version=1, formats=("saved_model",),
                     tflite_quantizations=(), overwrite=False, onnx_opset=ONNX_MIN_OPSET):
    """Checks an export request before any work. Cheap: reads nothing but paths.

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
    """
    formats, tflite_quantizations = _names(formats), _names(tflite_quantizations)
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
    return paths


def tflite_path(out_dir, model_name, version, quantization):
    return os.path.join(out_dir, f"{model_name}-{version}.{quantization}.tflite")


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


def load_images(directory, config, *, limit=None):
    """Decodes and eval-transforms the images of a folder.

    Args:
        directory: folder of JPEG/PNG/BMP/GIF files.
        config: the ``EvalConfig`` (size, crop, interpolation).
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
        images.append(_transform(image, config))
    return np.stack(images)


def load_tfds_images(name, split, config, *, limit=100, data_dir=None):
    """Eval-transformed images from a tensorflow-datasets split.

    Args:
        name: dataset name (e.g. ``"imagenet2012"``, ``"imagenette"``).
        split: split, e.g. ``"validation[:200]"``.
        config: the ``EvalConfig``.
        limit: number of images.
        data_dir: tfds data directory.

    Returns:
        ``(N, size, size, 3)`` float32 array of 0-255 pixels.
    """
    import tensorflow_datasets as tfds

    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    images = [_transform(ex["image"], config) for ex in ds.take(limit)]
    if not images:
        raise ValueError(f"tfds split {name}:{split} yielded no image")
    return np.stack(images)


def _transform(image, config):
    if image.shape[-1] == 1:
        import tensorflow as tf
        image = tf.image.grayscale_to_rgb(image)
    return preprocessing.eval_transform(
        image, size=config.size, crop_pct=config.crop_pct,
        interpolation=config.interpolation).numpy()


# --------------------------------------------------------------------------
# SavedModel.


def find_xla_functions(saved_model_dir):
    """Functions and nodes of a SavedModel that force XLA compilation.

    Looks at every function definition and node of every meta graph for the
    ``_XlaMustCompile``/``_XlaCompile`` attributes set by
    ``tf.function(jit_compile=True)`` and for XLA launch ops.

    Args:
        saved_model_dir: a SavedModel directory.

    Returns:
        Sorted list of ``"function/node: attribute"`` strings (empty when clean).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())

    def node_hits(scope, nodes):
        out = []
        for node in nodes:
            if node.op in _XLA_OPS:
                out.append(f"{scope}/{node.name}: op {node.op}")
            for key in _XLA_ATTRS:
                if key in node.attr and node.attr[key].b:
                    out.append(f"{scope}/{node.name}: {key}")
        return out

    hits = []
    for meta_graph in proto.meta_graphs:
        hits += node_hits("graph", meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            name = function.signature.name
            for key in _XLA_ATTRS:
                if key in function.attr and function.attr[key].b:
                    hits.append(f"{name}: {key}")
            hits += node_hits(name, function.node_def)
    return sorted(set(hits))


def _serving_archive(model, config, class_names, top_k):
    """A ``keras.export.ExportArchive`` with the three serving signatures.

    ``ExportArchive`` (not a bare ``tf.Module``) is what makes the variables
    freezable: a ``tf.Module`` holding a Keras 3 model converts to TFLite with
    unresolved ``VAR_HANDLE``/``READ_VARIABLE`` ops that output NaN.
    """
    import keras
    import tensorflow as tf

    from keras_resnext import layers as layers_lib

    # Probe once eagerly so the probe is not traced into the exported graph.
    layers_lib.native_grouped_conv_supported()
    softmax_in_model = _outputs_probabilities(model)
    names = tf.constant(class_names)
    size = config.size

    def probabilities(images):
        x = preprocessing.preprocess_input(images, mean=config.mean, std=config.std)
        out = model(x, training=False)
        return out if softmax_in_model else tf.nn.softmax(out, axis=-1)

    def classify(images):
        probs = probabilities(images)
        scores, indices = tf.math.top_k(probs, k=top_k)
        return {"probabilities": probs, "top_k_indices": indices,
                "top_k_scores": scores,
                "top_k_class_names": tf.gather(names, indices)}

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return preprocessing.eval_transform(
            image, size=size, crop_pct=config.crop_pct,
            interpolation=config.interpolation)

    def classify_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return classify(images)

    image_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_IMAGES)
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints track the variables they use;
    # tracking the model too stores every weight twice (keras-team/keras#23553,
    # open in Keras 3.15): 2x files and 2x variable memory in TF Serving.
    archive.add_endpoint(SIGNATURE_IMAGES, classify, input_signature=[image_spec])
    archive.add_endpoint(
        SIGNATURE_BYTES, classify_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
    archive.add_endpoint(
        SIGNATURE_PROBABILITIES, lambda images: {"probabilities": probabilities(images)},
        input_signature=[image_spec])
    return archive


def warmup_requests(model_name, size, num_images=1):
    """TF Serving warmup: one ``PredictionLog`` per signature.

    Returns:
        List of ``tensorflow_serving.apis.prediction_log_pb2.PredictionLog``.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    # A smooth gradient image: deterministic and a realistic JPEG.
    ramp = np.linspace(0, 255, size, dtype="float32")
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)),
                      np.tile(ramp[:, None], (1, size))], axis=-1)
    images = np.repeat(image[None], num_images, axis=0).astype("float32")
    jpeg = tf.io.encode_jpeg(tf.cast(image, tf.uint8)).numpy()
    logs = []
    for signature, key, value in (
            (SIGNATURE_IMAGES, INPUT_IMAGES, tf.make_tensor_proto(images)),
            (SIGNATURE_BYTES, INPUT_BYTES,
             tf.make_tensor_proto([jpeg] * num_images, dtype=tf.string))):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        request.inputs[key].CopyFrom(value)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def _write_warmup(saved_model_dir, model_name, size):
    import tensorflow as tf

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(model_name, size):
            writer.write(log.SerializeToString())
    return path


def _write_saved_model(model, path, *, model_name, config, class_names, top_k):
    archive = _serving_archive(model, config, class_names, top_k)
    archive.write_out(path, verbose=False)
    hits = find_xla_functions(path)
    if hits:
        raise ValueError(
            "The exported graph contains XLA-must-compile functions, which tf2onnx "
            "and TF Serving cannot run (Keras compiles `Conv2D(groups=C)` with "
            "jit_compile=True; use keras_resnext.GroupConv2D). Found: "
            + "; ".join(hits[:5]))
    _write_warmup(path, model_name, config.size)


def write_models_config(out_dir):
    """Writes ``<out>/models.config`` listing every model exported in ``out_dir``.

    A model is a directory holding at least one numeric version directory with
    a ``saved_model.pb``. ``base_path`` is absolute, so the same file works for
    the binary and for docker when ``out_dir`` is mounted at the same path.

    Returns:
        The path of the config file.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    out_dir = os.path.abspath(out_dir)
    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(os.listdir(out_dir)):
        base = os.path.join(out_dir, name)
        if name.startswith(".") or not os.path.isdir(base):
            continue
        if any(v.isdigit() and os.path.isfile(os.path.join(base, v, "saved_model.pb"))
               for v in os.listdir(base)):
            entry = config.model_config_list.config.add()
            entry.name = name
            entry.base_path = base
            entry.model_platform = "tensorflow"
    path = os.path.join(out_dir, MODELS_CONFIG)
    _atomic_write_text(path, text_format.MessageToString(config))
    return path


def export_saved_model(model, out_dir, *, model_name, version=1, weights_entry=None,
                       overwrite=False, class_names=None, top_k=DEFAULT_TOP_K):
    """Exports ``model`` as a TF Serving SavedModel and updates ``models.config``.

    Signatures: ``serving_default`` (``images``: float32 ``[N, S, S, 3]``, 0-255)
    and ``serve_image_bytes`` (``image_bytes``: string ``[N]``, encoded
    JPEG/PNG, decoded, resized and center-cropped in the graph), both returning
    ``probabilities``, ``top_k_indices``, ``top_k_scores`` and
    ``top_k_class_names``; ``predict_probabilities`` returns probabilities only.
    Preprocessing (mean/std of the weights entry) runs in the graph.

    Args:
        model: a Keras classifier built by this package (static square input).
        out_dir: output directory; the SavedModel goes to
            ``<out_dir>/<model_name>/<version>``.
        model_name: TF Serving model name.
        version: positive integer version.
        weights_entry: ``keras_resnext.weights.PretrainedWeights`` giving the
            evaluation transform and mean/std, or None for the defaults
            (crop 0.875, bilinear, ImageNet mean/std).
        overwrite: replace an existing version.
        class_names: names for a non-ImageNet classifier (default
            ``"class_<i>"``; ImageNet names for 1000 classes).
        top_k: number of top classes returned.

    Returns:
        The path of the version directory.

    Raises:
        ValueError: bad arguments (before any work), or an XLA-must-compile
            function in the graph (nothing is left behind).
    """
    validate_request(out_dir, model_name=model_name, version=version,
                     formats=("saved_model",), overwrite=overwrite)
    config, class_names, top_k = _check_model(model, weights_entry, class_names, top_k)
    model = float32_model(model)
    with _staging(out_dir) as staging:
        path = os.path.join(staging.root, "saved_model")
        _write_saved_model(model, path, model_name=model_name, config=config,
                           class_names=class_names, top_k=top_k)
        staging.add(path, os.path.join(out_dir, model_name, str(version)))
    write_models_config(out_dir)
    return os.path.join(os.fspath(out_dir), model_name, str(version))


def float32_model(model):
    """``model`` itself, or a float32 copy of a mixed-precision model.

    Deployment artifacts compute in float32: TFLite has no float16 ``Conv2D``
    builtin (conversion of a ``mixed_float16`` model fails), and a float16
    grouped convolution on CPU takes ``GroupConv2D``'s split fallback. The copy
    has the same layers, layer names (but the input's) and float32 weights.

    Args:
        model: a functional Keras model.

    Returns:
        A model whose every layer computes in float32.
    """
    import keras

    def mixed(layer):
        policy = getattr(layer, "dtype_policy", None)
        return policy is not None and policy.compute_dtype != "float32"

    if not any(mixed(layer) for layer in model.layers):
        return model

    def clone_layer(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy


def _check_model(model, weights_entry, class_names, top_k):
    config = eval_config(model, weights_entry)
    num_classes = _num_classes(model)
    _outputs_probabilities(model)
    class_names = resolve_class_names(num_classes, class_names)
    if not isinstance(top_k, int) or not 1 <= top_k:
        raise ValueError(f"`top_k` must be a positive integer. Received: top_k={top_k!r}")
    return config, class_names, min(top_k, num_classes)


# Runs in a fresh interpreter: loads the SavedModel from disk only.
_VERIFY_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
path, inp, out = sys.argv[1:4]
data = np.load(inp)
loaded = tf.saved_model.load(path)
result = {}
sig = loaded.signatures["%s"]
def plain(v):  # string outputs as fixed-width bytes: no pickle needed
    v = v.numpy()
    return v.astype("S") if v.dtype == object else v
for k, v in sig(images=tf.constant(data["images"])).items():
    result["images/" + k] = plain(v)
if "bytes_data" in data:
    sig = loaded.signatures["%s"]
    buf, ends = data["bytes_data"].tobytes(), data["bytes_ends"]
    blobs = [buf[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    for k, v in sig(image_bytes=tf.constant(blobs)).items():
        result["bytes/" + k] = plain(v)
np.savez(out, **result)
""" % (SIGNATURE_IMAGES, SIGNATURE_BYTES)


def run_saved_model_in_subprocess(saved_model_dir, images, image_bytes=None):
    """Runs the serving signatures of a SavedModel in a fresh Python process.

    Args:
        saved_model_dir: the version directory.
        images: float32 ``(N, S, S, 3)`` 0-255 batch for ``serving_default``.
        image_bytes: optional list of encoded images for ``serve_image_bytes``.

    Returns:
        Dict ``{"images/<output>": array, "bytes/<output>": array}``.

    Raises:
        RuntimeError: the subprocess failed (its stderr is included).
    """
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        arrays = {"images": np.asarray(images, "float32")}
        if image_bytes is not None:
            # Concatenated bytes + end offsets: exact, and loadable without pickle.
            arrays["bytes_data"] = np.frombuffer(b"".join(image_bytes), np.uint8)
            arrays["bytes_ends"] = np.cumsum([len(b) for b in image_bytes])
        np.savez(inp, **arrays)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY_SCRIPT, os.fspath(saved_model_dir), inp, out],
            capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"Loading {saved_model_dir!r} in a fresh process failed:\n{proc.stderr[-3000:]}")
        with np.load(out) as data:
            return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------
# TFLite.


def convert_tflite(saved_model_dir, quantization, *, representative_images=None):
    """Converts the ``predict_probabilities`` signature to a TFLite flatbuffer.

    Args:
        saved_model_dir: a SavedModel written by this module.
        quantization: ``"float32"``, ``"float16"`` (float16 weights),
            ``"dynamic"`` (int8 weights, float activations) or ``"int8"``
            (full integer: int8 weights and activations, float32 input/output).
        representative_images: float32 ``(N, S, S, 3)`` 0-255 images; required
            for ``"int8"``.

    Returns:
        The model as bytes.
    """
    import tensorflow as tf

    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(
            f"Unknown TFLite quantization {quantization!r}. Accepted: {TFLITE_QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE_PROBABILITIES])
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("Full-integer int8 needs representative (calibration) images.")
        data = np.asarray(representative_images, "float32")
        converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def tflite_runner(model_content):
    """A callable ``images -> probabilities`` running a TFLite model in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    runner = interpreter.get_signature_runner(SIGNATURE_PROBABILITIES)

    def run(images):
        images = np.asarray(images, "float32")
        return np.concatenate([runner(images=images[i:i + 1])["probabilities"]
                               for i in range(len(images))])

    run.interpreter = interpreter
    return run


def tflite_op_names(model_content):
    """Sorted builtin op names of a TFLite model (after delegation)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


# --------------------------------------------------------------------------
# ONNX.


def convert_onnx(saved_model_dir, path, *, opset=ONNX_MIN_OPSET):
    """Converts ``predict_probabilities`` to ONNX with tf2onnx (dynamic batch).

    Args:
        saved_model_dir: a SavedModel written by this module.
        path: output ``.onnx`` file.
        opset: ONNX opset.

    Returns:
        The ``onnx.ModelProto``.
    """
    import tensorflow as tf
    from tf2onnx import convert
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, tensors_to_rename = tf_loader.from_saved_model(
        saved_model_dir, None, None, tag="serve", signatures=[SIGNATURE_PROBABILITIES],
        return_tensors_to_rename=True)
    with tf.device("/cpu:0"):
        model_proto, _ = convert.from_graph_def(
            graph_def, name=SIGNATURE_PROBABILITIES, input_names=inputs,
            output_names=outputs, opset=opset, tensors_to_rename=tensors_to_rename,
            output_path=path)
    return model_proto


def onnx_grouped_convs(model_proto):
    """``group`` attribute of every ONNX ``Conv`` node with ``group > 1``."""
    groups = []
    for node in model_proto.graph.node:
        if node.op_type == "Conv":
            for attr in node.attribute:
                if attr.name == "group" and attr.i > 1:
                    groups.append(attr.i)
    return groups


def onnx_runner(path):
    """A callable ``images -> probabilities`` running an ONNX file in onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {name: np.asarray(images, "float32")})[0]

    run.session = session
    return run


# --------------------------------------------------------------------------
# The full export.


def export(model, out_dir, *, model_name, version=1, formats=FORMATS,
           tflite_quantizations=DEFAULT_TFLITE_QUANTIZATIONS, weights_entry=None,
           class_names=None, top_k=DEFAULT_TOP_K, calibration_images=None,
           validation_images=None, data_sources=None, overwrite=False,
           onnx_opset=ONNX_MIN_OPSET, latency_runs=20, verify_in_subprocess=True):
    """Exports ``model`` to every requested format, verifies each, writes a report.

    The SavedModel is always built (TFLite and ONNX are converted from it) but
    only kept when ``"saved_model"`` is in ``formats``.

    Args:
        model: a Keras classifier with a static square input.
        out_dir: output directory.
        model_name: TF Serving model name and artifact file prefix.
        version: positive integer version.
        formats: subset of ``FORMATS``.
        tflite_quantizations: subset of ``TFLITE_QUANTIZATIONS``.
        weights_entry: ``PretrainedWeights`` or None (see ``eval_config``).
        class_names: see ``resolve_class_names``.
        top_k: number of top classes of the serving signatures.
        calibration_images: float32 ``(N, S, S, 3)`` 0-255 (eval-transformed)
            images for int8 calibration; required for ``"int8"``.
        validation_images: images the artifacts are compared on; default 8
            uniform-noise images (seed 0), fine for float differences but
            meaningless for top-1 agreement.
        data_sources: dict describing where the images came from (copied to
            the report), e.g. ``{"calibration": "dir ...", "validation": ...}``.
        overwrite: replace existing artifacts of this version.
        onnx_opset: ONNX opset (>= 17).
        latency_runs: batch-1 runs timed per artifact (median reported).
        verify_in_subprocess: load the SavedModel in a fresh process for the
            check (else in this process).

    Returns:
        The report dict (also written to ``<out>/export_report.json`` and
        ``.md``). Each artifact row has ``max_abs_diff``, ``top1_agreement``,
        ``tolerance``/``ok`` for float variants, ``meets_target`` for
        quantized ones, ``size_bytes`` and ``latency_ms_batch1``.

    Raises:
        ValueError: bad arguments, before any work.
    """
    formats = _names(formats)
    quantizations = _names(tflite_quantizations) if "tflite" in formats else ()
    validate_request(out_dir, model_name=model_name, version=version, formats=formats,
                     tflite_quantizations=quantizations, overwrite=overwrite,
                     onnx_opset=onnx_opset)
    config, class_names, top_k = _check_model(model, weights_entry, class_names, top_k)
    compute_dtypes = sorted({layer.dtype_policy.compute_dtype for layer in model.layers
                             if getattr(layer, "dtype_policy", None) is not None})
    model = float32_model(model)
    expected_shape = (config.size, config.size, 3)
    for label, data in (("calibration_images", calibration_images),
                        ("validation_images", validation_images)):
        if data is not None and (np.ndim(data) != 4 or np.shape(data)[1:] != expected_shape
                                 or len(data) == 0):
            raise ValueError(
                f"`{label}` must be a non-empty (N, {config.size}, {config.size}, 3) "
                f"array. Received shape: {np.shape(data)}")
    if "int8" in quantizations and calibration_images is None:
        raise ValueError(
            "TFLite 'int8' (full integer) needs calibration images: pass "
            "calibration_images (CLI: --calibration-images DIR or --calibration-tfds).")
    sources = dict(data_sources or {})
    sources.setdefault("validation", "uniform noise, seed 0" if validation_images is None
                       else "validation_images argument")
    if validation_images is None:
        validation_images = np.random.default_rng(0).uniform(
            0, 255, (8, *expected_shape)).astype("float32")
    validation_images = np.asarray(validation_images, "float32")
    reference = _keras_probabilities(model, validation_images, config)

    keras_graph = _keras_graph(model, config)
    graph_probs = keras_graph(validation_images)
    noise_floor = float(np.max(np.abs(graph_probs - reference)))
    tolerances = {fmt: max(tol, NOISE_FLOOR_FACTOR * noise_floor)
                  for fmt, tol in TOLERANCES.items()}

    def row(fmt, path, probs, latency_ms):
        return _row(fmt, path, probs, reference, latency_ms, tolerances.get(fmt))

    out_dir = os.fspath(out_dir)
    rows = [
        row("keras_eager", None, reference, _latency(
            lambda x: _keras_probabilities(model, x, config), validation_images,
            latency_runs)),
        row("keras_graph", None, graph_probs,
            _latency(keras_graph, validation_images, latency_runs)),
    ]
    with _staging(out_dir) as staging:
        sm_dir = os.path.join(staging.root, "saved_model")
        _write_saved_model(model, sm_dir, model_name=model_name, config=config,
                           class_names=class_names, top_k=top_k)
        if "saved_model" in formats:
            rows.append(_verify_saved_model(sm_dir, validation_images, row, latency_runs,
                                            verify_in_subprocess))
            staging.add(sm_dir, os.path.join(out_dir, model_name, str(version)))
        for quantization in quantizations:
            content = convert_tflite(sm_dir, quantization,
                                     representative_images=calibration_images)
            path = os.path.join(staging.root, f"{quantization}.tflite")
            with open(path, "wb") as f:
                f.write(content)
            run = tflite_runner(content)
            rows.append(row(f"tflite_{quantization}", path, run(validation_images),
                            _latency(run, validation_images, latency_runs)))
            rows[-1]["ops"] = tflite_op_names(content)
            staging.add(path, tflite_path(out_dir, model_name, version, quantization))
        if "onnx" in formats:
            path = os.path.join(staging.root, "model.onnx")
            proto = convert_onnx(sm_dir, path, opset=onnx_opset)
            run = onnx_runner(path)
            rows.append(row("onnx", path, run(validation_images),
                            _latency(run, validation_images, latency_runs)))
            groups = onnx_grouped_convs(proto)
            rows[-1].update(
                opset=onnx_opset, grouped_conv_nodes=len(groups),
                grouped_conv_groups=sorted(set(groups)),
                dynamic_batch=not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField(
                    "dim_value"))
            staging.add(path, os.path.join(out_dir, f"{model_name}-{version}.onnx"))
        for entry in rows:
            if entry["path"] is not None:
                entry["path"] = os.path.relpath(staging.destination(entry["path"]), out_dir)
        report = {
            "model_name": model_name,
            "version": version,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "eval_transform": dataclasses.asdict(config),
            "weights": None if weights_entry is None else
            f"{weights_entry.arch}.{weights_entry.tag}",
            "num_classes": len(class_names),
            # Of the model passed in; the artifacts always compute in float32.
            "model_compute_dtypes": compute_dtypes,
            "xla_must_compile": [],
            "validation_images": len(validation_images),
            # Mean top-1 probability of the Keras model: near 1/classes means
            # flat outputs, on which top-1 agreement says little.
            "reference_mean_top1_probability": float(reference.max(-1).mean()),
            "calibration_images": 0 if calibration_images is None else len(calibration_images),
            "data_sources": sources,
            "keras_eager_vs_graph_max_abs_diff": noise_floor,
            "spec_tolerances": TOLERANCES,
            "tolerances": tolerances,
            "agreement_target": AGREEMENT_TARGET,
            "artifacts": rows,
            "versions": _versions(),
        }
    if "saved_model" in formats:
        write_models_config(out_dir)
    _atomic_write_text(os.path.join(out_dir, REPORT_JSON), json.dumps(report, indent=1))
    _atomic_write_text(os.path.join(out_dir, REPORT_MD), report_markdown(report))
    return report


def weights_entry_for(arch, weights=None, preprocessing_tag=None):
    """The ``PretrainedWeights`` whose preprocessing an export bakes in, or None.

    Args:
        arch: registered architecture name, or None for a custom ``Spec``.
        weights: the ``weights=`` argument (a tag or ``"imagenet"`` selects
            its entry; files and ``hf-hub:`` ids select none).
        preprocessing_tag: a tag (or ``"imagenet"``) that overrides ``weights``.

    Raises:
        ValueError: ``preprocessing_tag`` without a registered ``arch``, or
            an unknown tag.
    """
    from keras_resnext import weights as weights_lib

    if preprocessing_tag is not None:
        if arch is None:
            raise ValueError(
                "`preprocessing_tag` needs a registered architecture (--model). "
                f"Received: preprocessing_tag={preprocessing_tag!r} with a custom spec")
        return weights_lib.get_pretrained(arch, preprocessing_tag)
    if (arch is not None and weights_lib.is_pretrained(weights) and
            not str(weights).startswith(weights_lib.HUB_PREFIX)):
        return weights_lib.get_pretrained(arch, weights)
    return None


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


def export_by_name(arch=None, *, spec=None, weights=None, input_size=None,
                   classes=1000, out_dir, model_name=None, formats=FORMATS,
                   tflite_quantizations=DEFAULT_TFLITE_QUANTIZATIONS,
                   calibration_dir=None, calibration_tfds=None, num_calibration=100,
                   validation_dir=None, validation_tfds=None, num_validation=200,
                   tfds_data_dir=None, version=1, overwrite=False, preprocessing_tag=None,
                   **kwargs):
    """Builds a registered model (or a ``Spec``), loads the data, calls ``export``.

    What ``applications/export.py`` runs. Every argument is checked before
    the model is built or an image decoded.

    Args:
        arch: registered model name (see ``keras_resnext.list_models()``).
        spec: a ``Spec`` instead of ``arch`` (``model_name`` then required).
        weights: ``None``, ``"imagenet"``, a pretrained tag or a weights file.
        input_size: model input size; default: the weights entry's
            ``test_input_size``, else the spec's default size.
        classes: classifier width.
        out_dir: output directory.
        model_name: TF Serving name; default ``arch``.
        formats: subset of ``FORMATS``.
        tflite_quantizations: subset of ``TFLITE_QUANTIZATIONS``.
        calibration_dir: folder of calibration images.
        calibration_tfds: ``"name:split"`` of a tfds split for calibration.
        num_calibration: calibration images used.
        validation_dir: folder of validation images.
        validation_tfds: ``"name:split"`` for validation.
        num_validation: validation images used. Without a validation source,
            images of the calibration folder after the first
            ``num_calibration`` are held out for validation.
        tfds_data_dir: tfds data directory.
        version: positive integer version.
        overwrite: replace an existing version.
        preprocessing_tag: pretrained tag whose evaluation transform and
            mean/std to bake in, e.g. when ``weights`` is a downloaded copy
            of that tag's file; default: the tag ``weights`` names, if any.
        **kwargs: more arguments of ``export``.

    Returns:
        The report dict.
    """
    from keras_resnext import model as model_lib
    from keras_resnext import specs as specs_lib
    from keras_resnext import weights as weights_lib

    if (arch is None) == (spec is None):
        raise ValueError("Pass exactly one of `arch` (a registered name) and `spec`. "
                         f"Received: arch={arch!r}, spec={spec!r}")
    if arch is not None:
        spec = specs_lib.get_spec(arch)
    model_name = model_name or arch
    formats = _names(formats)
    quantizations = _names(tflite_quantizations) if "tflite" in formats else ()
    validate_request(out_dir, model_name=model_name, version=version, formats=formats,
                     tflite_quantizations=quantizations, overwrite=overwrite,
                     onnx_opset=kwargs.get("onnx_opset", ONNX_MIN_OPSET))
    for label, directory, tfds_source in (
            ("calibration", calibration_dir, calibration_tfds),
            ("validation", validation_dir, validation_tfds)):
        if directory is not None and tfds_source is not None:
            raise ValueError(f"Give one {label} source, a folder or a tfds split. "
                             f"Received: {directory!r} and {tfds_source!r}")
        if directory is not None:
            list_images(directory)
        if tfds_source is not None:
            parse_tfds_source(tfds_source)
    if "int8" in quantizations and calibration_dir is None and calibration_tfds is None:
        raise ValueError(
            "TFLite 'int8' (full integer) needs calibration images: give a folder "
            "(--calibration-images) or a tfds split (--calibration-tfds).")
    weights_lib.validate_weights_argument(weights, arch or model_name)
    entry = weights_entry_for(arch, weights, preprocessing_tag)
    size = input_size or (entry.test_input_size if entry else spec.default_size)
    if not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise ValueError(
            f"Input size too small to export; the smallest accepted is {MIN_INPUT_SIZE}. "
            f"Received: input_size={size!r}")
    config = config_for_size(size, entry)

    def load(directory, tfds_source, limit):
        if directory is not None:
            return load_images(directory, config, limit=limit), f"folder {directory}"
        if tfds_source is not None:
            name, split = parse_tfds_source(tfds_source)
            return (load_tfds_images(name, split, config, limit=limit, data_dir=tfds_data_dir),
                    f"tfds {tfds_source}")
        return None, None

    sources = {}
    held_out = validation_dir is None and validation_tfds is None
    calibration, sources["calibration"] = load(
        calibration_dir, calibration_tfds,
        num_calibration + num_validation if held_out else num_calibration)
    validation, sources["validation"] = load(validation_dir, validation_tfds, num_validation)
    if held_out and calibration is not None:
        if len(calibration) > num_calibration:
            validation = calibration[num_calibration:]
            calibration = calibration[:num_calibration]
            sources["validation"] = (f"{sources['calibration']}, images after the first "
                                     f"{num_calibration} (held out)")
        else:
            validation = calibration
            sources["validation"] = (f"{sources['calibration']} (the calibration images: "
                                     "NOT held out)")
    if validation is None:
        sources.pop("validation")
    if calibration is None:
        sources.pop("calibration")

    model = model_lib.build(arch or spec, weights=weights, input_shape=(size, size, 3),
                            classes=classes, name=model_name)
    return export(model, out_dir, model_name=model_name, version=version, formats=formats,
                  tflite_quantizations=quantizations, weights_entry=entry,
                  calibration_images=calibration, validation_images=validation,
                  data_sources=sources, overwrite=overwrite, **kwargs)


def _keras_probabilities(model, images, config):
    import tensorflow as tf

    x = preprocessing.preprocess_input(np.asarray(images, "float32"),
                                       mean=config.mean, std=config.std)
    out = model(x, training=False)
    if not _outputs_probabilities(model):
        out = tf.nn.softmax(out, axis=-1)
    return np.asarray(out)


def _keras_graph(model, config):
    """``images -> probabilities`` with the Keras model inside a ``tf.function``."""
    import tensorflow as tf

    softmax_in_model = _outputs_probabilities(model)

    @tf.function(jit_compile=False)
    def probabilities(images):
        x = preprocessing.preprocess_input(images, mean=config.mean, std=config.std)
        out = model(x, training=False)
        return out if softmax_in_model else tf.nn.softmax(out, axis=-1)

    return lambda images: probabilities(tf.constant(images, tf.float32)).numpy()


def _verify_saved_model(path, images, row, latency_runs, in_subprocess):
    import tensorflow as tf

    if in_subprocess:
        probs = run_saved_model_in_subprocess(path, images)["images/probabilities"]
    else:
        probs = tf.saved_model.load(path).signatures[SIGNATURE_IMAGES](
            images=tf.constant(images))["probabilities"].numpy()
    signature = tf.saved_model.load(path).signatures[SIGNATURE_IMAGES]
    latency = _latency(lambda x: signature(images=tf.constant(x)), images, latency_runs)
    out = row("saved_model", path, probs, latency)
    out["signatures"] = [SIGNATURE_IMAGES, SIGNATURE_BYTES, SIGNATURE_PROBABILITIES]
    out["verified_in_subprocess"] = in_subprocess
    return out


def _row(fmt, path, probs, reference, latency_ms, tolerance=None):
    probs = np.asarray(probs)
    row = {
        "format": fmt,
        "path": path,
        "size_bytes": None if path is None else _size(path),
        "max_abs_diff": float(np.max(np.abs(probs - reference))),
        "mean_abs_diff": float(np.mean(np.abs(probs - reference))),
        "top1_agreement": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
        "latency_ms_batch1": latency_ms,
    }
    if tolerance is not None:
        row["tolerance"] = tolerance
        row["ok"] = row["max_abs_diff"] <= tolerance
    elif fmt.startswith("tflite_"):
        row["meets_target"] = row["top1_agreement"] >= AGREEMENT_TARGET
    return row


def _latency(fn, images, runs):
    """Median wall time (ms) of ``runs`` batch-1 calls after 2 warm-up calls."""
    one = images[:1]
    for _ in range(2):
        fn(one)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn(one)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _versions():
    import importlib.metadata as md

    out = {}
    for package in ("tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def report_markdown(report):
    """The report as a markdown table (format, size, diff/agreement, latency)."""
    lines = [
        f"Export of `{report['model_name']}` version {report['version']} "
        f"({report['validation_images']} validation images; "
        f"input {report['eval_transform']['size']} px).",
        "",
        "Validation: " + report["data_sources"].get("validation", "?") +
        f"; Keras mean top-1 probability {report['reference_mean_top1_probability']:.3f}"
        f" ({report['num_classes']} classes). Keras eager vs graph: "
        f"{report['keras_eager_vs_graph_max_abs_diff']:.1e} (float tolerances are at least "
        f"{NOISE_FLOOR_FACTOR:g}x this).",
        "",
        "| format | file | size | max abs diff | top-1 agreement | check | batch-1 latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["artifacts"]:
        if "ok" in row:
            check = f"{'ok' if row['ok'] else 'FAILED'} (<= {row['tolerance']:g})"
        elif "meets_target" in row:
            check = (f"{'meets' if row['meets_target'] else 'below'} "
                     f"{report['agreement_target']:.0%} target")
        elif row["format"] == "keras_graph":
            check = "float32 floor"
        else:
            check = "reference"
        size = "" if row["size_bytes"] is None else _human_size(row["size_bytes"])
        lines.append(
            f"| {row['format']} | {row['path'] or ''} | {size} | "
            f"{row['max_abs_diff']:.2e} | {row['top1_agreement']:.2%} | {check} | "
            f"{row['latency_ms_batch1']:.2f} ms |")
    return "\n".join(lines) + "\n"


def _human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


# --------------------------------------------------------------------------
# Atomic writes.


def _atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_STAGING_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a server user must read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


class _Staging:
    """Artifacts written under ``root`` and the final paths they move to."""

    def __init__(self, root):
        self.root = root
        self.moves = []

    def add(self, src, dst):
        self.moves.append((src, dst))

    def destination(self, src):
        return dict(self.moves).get(src, src)

    def commit(self):
        trash = os.path.join(self.root, "replaced")
        os.makedirs(trash)
        for i, (src, dst) in enumerate(self.moves):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):  # overwrite=True was checked up front
                os.replace(dst, os.path.join(trash, str(i)))
            os.replace(src, dst)


@contextlib.contextmanager
def _staging(out_dir):
    """A staging directory in ``out_dir``; renamed into place only on success."""
    os.makedirs(out_dir, exist_ok=True)
    staging = _Staging(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    try:
        yield staging
        staging.commit()
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
