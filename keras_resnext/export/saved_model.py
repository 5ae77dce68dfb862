"""SavedModel for TF Serving: serving signatures, warmup, ``models.config``.

The SavedModel is written with ``keras.export.ExportArchive`` (three
signatures, preprocessing in the graph) from the model with BatchNorm folded
into its convolutions (``serving_model``), checked for XLA-must-compile
functions, given TF Serving warmup records, and verified by loading it in a
fresh Python process. TFLite, ONNX and OpenVINO are converted from it.
"""

import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from keras_resnext import layers
from keras_resnext.export.config import DEFAULT_TOP_K
from keras_resnext.export.config import INPUT_BYTES
from keras_resnext.export.config import INPUT_IMAGES
from keras_resnext.export.config import SIGNATURE_BYTES
from keras_resnext.export.config import SIGNATURE_IMAGES
from keras_resnext.export.config import SIGNATURE_PROBABILITIES
from keras_resnext.export.config import check_model
from keras_resnext.export.config import probabilities_fn
from keras_resnext.export.report import median_latency_ms
from keras_resnext.export.request import validate_request
from keras_resnext.export.staging import atomic_write_text
from keras_resnext.export.staging import staged

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"
_XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_noinline_xla")
_XLA_OPS = ("XlaLaunch", "_XlaCompile", "_XlaRun", "XlaCallModule")


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


def checked_images(images, size):
    """``images`` checked at run time to be ``[N, S, S, 3]`` (``tf.ensure_shape``).

    TF Serving's ``Session::Run`` does not enforce a signature's declared
    shape: under oneDNN a rank-3 batch aborted the process in the first
    convolution, a rank-5 one returned probabilities, and one channel was
    broadcast against the 3-channel mean. So the served signatures declare
    any shape and check it here, before the model, and the model only reads
    the checked tensor. (With a declared shape, Grappler may assume it: a
    ``tf.rank`` check was folded to the declared rank inside a loaded
    signature. A ``tf.debugging.Assert`` ahead of the check did not reliably
    run first either, so the check is the one op the model depends on.)

    Args:
        images: the signature's float32 input, of any shape.
        size: the model input size ``S``.

    Returns:
        ``images`` with static shape ``[None, S, S, 3]``.

    Raises:
        tf.errors.InvalidArgumentError: (at run time) another shape; the
            message names the received and the expected shape.
    """
    import tensorflow as tf

    return tf.ensure_shape(images, [None, size, size, 3])


def empty_safe(probabilities, num_classes):
    """``probabilities`` that answers an empty batch with ``[0, classes]``.

    With oneDNN an empty batch fails in the first fused convolution ("input
    depth must be evenly divisible by filter depth: 3 vs 64"); without it, it
    returns ``[0, classes]``. The model is skipped for an empty batch.
    """
    import tensorflow as tf

    def run(images):
        return tf.cond(tf.shape(images)[0] > 0, lambda: probabilities(images),
                       lambda: tf.zeros([0, num_classes], tf.float32))

    return run


def _serving_archive(model, transform, class_names, top_k):
    """A ``keras.export.ExportArchive`` with the three serving signatures.

    ``ExportArchive`` (not a bare ``tf.Module``) is what makes the variables
    freezable: a ``tf.Module`` holding a Keras 3 model converts to TFLite with
    unresolved ``VAR_HANDLE``/``READ_VARIABLE`` ops that output NaN.
    """
    import tensorflow as tf

    from keras_resnext import layers as layers_lib

    # Probe once eagerly so the probe is not traced into the exported graph.
    layers_lib.native_grouped_conv_supported()
    probabilities = empty_safe(probabilities_fn(model, transform), len(class_names))
    names = tf.constant(class_names)
    size = transform.size

    def classify(images):
        probs = probabilities(images)
        scores, indices = tf.math.top_k(probs, k=top_k)
        return {"probabilities": probs, "top_k_indices": indices,
                "top_k_scores": scores,
                "top_k_class_names": tf.gather(names, indices)}

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return transform.resize_crop(image)

    def classify_bytes(image_bytes):
        # Any shape declared, a vector checked, as in checked_images.
        images = tf.map_fn(decode, tf.ensure_shape(image_bytes, [None]),
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return classify(images)

    def classify_images(images):
        return classify(checked_images(images, size))

    def probabilities_only(images):
        return {"probabilities": probabilities(
            checked_images(images, size))}

    # Any shape: checked in the graph (checked_images).
    any_images = tf.TensorSpec(None, tf.float32, name=INPUT_IMAGES)
    return _archive({SIGNATURE_IMAGES: (classify_images, any_images),
                     SIGNATURE_BYTES: (classify_bytes,
                                       tf.TensorSpec(None, tf.string, name=INPUT_BYTES)),
                     SIGNATURE_PROBABILITIES: (probabilities_only, any_images)})


def _conversion_archive(model, transform):
    """An archive with ``predict_probabilities`` unguarded: what TFLite and ONNX convert.

    tf2onnx cannot convert the ``tf.cond`` of ``empty_safe`` (its ``If``
    branch loses the convolutions' ranks), and both runtimes check the input
    shape themselves (docs/deploy.md, "Bad input").
    """
    import tensorflow as tf

    probabilities = probabilities_fn(model, transform)
    size = transform.size
    return _archive({SIGNATURE_PROBABILITIES: (
        lambda images: {"probabilities": probabilities(images)},
        tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_IMAGES))})


def _archive(endpoints):
    """``keras.export.ExportArchive`` with ``{name: (fn, input_spec)}`` endpoints."""
    import keras

    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints track the variables they use;
    # tracking the model too stores every weight twice (keras-team/keras#23553,
    # open in Keras 3.15): 2x files and 2x variable memory in TF Serving.
    for name, (fn, spec) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=[spec])
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


def write_saved_model(model, path, *, model_name, transform, class_names, top_k):
    """Writes the serving SavedModel of ``model`` to ``path`` (checked, with warmup)."""
    _write_archive(lambda: _serving_archive(model, transform, class_names, top_k), path)
    _write_warmup(path, model_name, transform.size)


def write_conversion_source(model, path, *, transform):
    """Writes the SavedModel that ``convert_tflite``/``convert_onnx`` read to ``path``.

    Its only signature, ``predict_probabilities``, computes what the served
    one does, without the input checks (``_conversion_archive``).
    """
    _write_archive(lambda: _conversion_archive(model, transform), path)


def _write_archive(make_archive, path):
    """Traces ``make_archive()`` as the portable graph, writes it, checks for XLA.

    Raises:
        ValueError: the graph holds an XLA-must-compile function.
    """
    # Traced as the portable graph: one grouped op per GroupConv2D, runnable with
    # and without oneDNN whichever runtime exports (keras_resnext.layers).
    with layers.portable_graph():
        make_archive().write_out(path, verbose=False)
    hits = find_xla_functions(path)
    if hits:
        raise ValueError(
            "The exported graph contains XLA-must-compile functions, which tf2onnx "
            "and TF Serving cannot run (Keras compiles `Conv2D(groups=C)` with "
            "jit_compile=True; use keras_resnext.GroupConv2D). Found: "
            + "; ".join(hits[:5]))


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
    atomic_write_text(path, text_format.MessageToString(config))
    return path


def export_saved_model(model, out_dir, *, model_name, version=1, weights_entry=None,
                       overwrite=False, class_names=None, top_k=DEFAULT_TOP_K,
                       fold_batch_norm=True):
    """Exports ``model`` as a TF Serving SavedModel and updates ``models.config``.

    Signatures: ``serving_default`` (``images``: float32 ``[N, S, S, 3]``, 0-255)
    and ``serve_image_bytes`` (``image_bytes``: string ``[N]``, encoded
    JPEG/PNG, decoded, resized and center-cropped in the graph), both returning
    ``probabilities``, ``top_k_indices``, ``top_k_scores`` and
    ``top_k_class_names``; ``predict_probabilities`` returns probabilities only.
    Preprocessing (mean/std of the weights entry) runs in the graph; BatchNorm
    is folded into the convolutions (``serving_model``).

    Args:
        model: a Keras classifier built by this package (static square input).
        out_dir: output directory; the SavedModel goes to
            ``<out_dir>/<model_name>/<version>``.
        model_name: TF Serving model name.
        version: positive integer version.
        weights_entry: ``keras_resnext.pretrained.PretrainedWeights`` giving the
            evaluation transform and mean/std, or None for the defaults
            (crop 0.875, bilinear, ImageNet mean/std).
        overwrite: replace an existing version.
        class_names: names for a non-ImageNet classifier (default
            ``"class_<i>"``; ImageNet names for 1000 classes).
        top_k: number of top classes returned.
        fold_batch_norm: write a copy with BatchNorm folded into the
            convolutions (``serving_model``); False writes ``model`` as it is.

    Returns:
        The path of the version directory.

    Raises:
        ValueError: bad arguments (before any work), or an XLA-must-compile
            function in the graph (nothing is left behind).
        FileExistsError: without ``overwrite``, another export published
            this version while this one ran (this one publishes nothing).
    """
    validate_request(out_dir, model_name=model_name, version=version,
                     formats=("saved_model",), overwrite=overwrite,
                     fold_batch_norm=fold_batch_norm)
    transform, class_names, top_k = check_model(model, weights_entry, class_names, top_k)
    model, _ = serving_model(float32_model(model), fold_batch_norm)
    with staged(out_dir, overwrite=overwrite) as staging:
        path = os.path.join(staging.root, "saved_model")
        write_saved_model(model, path, model_name=model_name, transform=transform,
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


def serving_model(model, fold_batch_norm=True):
    """The model a SavedModel is written from: ``model`` with BatchNorm folded.

    ``keras_resnext.fold_batch_norm`` folds each BatchNorm that only follows
    a convolution into it. TensorFlow's remapper does not fuse a grouped
    convolution with its BatchNorm, so the folded graph is the faster one in
    TF Serving (docs/deploy.md); ONNX Runtime, OpenVINO and the TFLite
    converter fold on their own, so it changes nothing for them. A model
    that cannot be folded (``fold_batch_norm`` raises ``ValueError``: not a
    functional model) is written as it is, with a warning.

    Args:
        model: the float32 model to export.
        fold_batch_norm: False: ``model`` itself.

    Returns:
        ``(model to write, folding)``; ``folding`` holds the report's fields
        (``folding_fields``).
    """
    from keras_resnext import folding

    if not fold_batch_norm:
        return model, folding_fields(0, "fold_batch_norm=False")
    try:
        folded = folding.fold_batch_norm(model)
    except ValueError as e:
        warnings.warn(f"Exporting with BatchNorm not folded: {e}", stacklevel=3)
        return model, folding_fields(0, str(e))
    count = sum(isinstance(layer, folding.FoldedBatchNorm) for layer in folded.layers)
    if count == 0:
        return model, folding_fields(0, "no convolution followed only by a BatchNorm")
    return folded, folding_fields(count)


def folding_fields(count, not_folded_because=None):
    """The export report's BatchNorm folding fields."""
    return {"batch_norm_folded": count > 0, "folded_batch_norms": count,
            "batch_norm_not_folded_because": not_folded_because}


# Runs in a fresh interpreter: loads the SavedModel from disk only. On Linux it
# dies with the export (prctl PR_SET_PDEATHSIG), even one killed with SIGKILL.
_VERIFY_SCRIPT = r"""
import os, signal, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[4]):  # the parent died before prctl
        sys.exit(1)
import numpy as np, tensorflow as tf
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
            [sys.executable, "-c", _VERIFY_SCRIPT, os.fspath(saved_model_dir), inp, out,
             str(os.getpid())],
            capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"Loading {saved_model_dir!r} in a fresh process failed:\n{proc.stderr[-3000:]}")
        with np.load(out) as data:
            return {k: data[k] for k in data.files}


def verify_saved_model(path, images, row, latency_runs, in_subprocess):
    import tensorflow as tf

    if in_subprocess:
        probs = run_saved_model_in_subprocess(path, images)["images/probabilities"]
    else:
        probs = tf.saved_model.load(path).signatures[SIGNATURE_IMAGES](
            images=tf.constant(images))["probabilities"].numpy()
    signature = tf.saved_model.load(path).signatures[SIGNATURE_IMAGES]
    latency = median_latency_ms(lambda x: signature(images=tf.constant(x)), images, latency_runs)
    out = row("saved_model", path, probs, latency)
    out["signatures"] = [SIGNATURE_IMAGES, SIGNATURE_BYTES, SIGNATURE_PROBABILITIES]
    out["verified_in_subprocess"] = in_subprocess
    return out
