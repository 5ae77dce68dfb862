"""Shared test helpers and constants: small specs, fixture models, child processes.

Test modules import what they share from here (never from ``conftest`` or from
each other); ``conftest.py`` keeps the pytest fixtures. Child processes that
the tests start have this folder on their path, so they import it too.
"""

import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np

import keras_resnext

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, "fixtures")

# A ResNeXt small enough to build and run in well under a second.
TINY_SPEC = keras_resnext.Spec(
    depths=(1, 1), widths=(8, 16), cardinality=4, base_width=16, default_size=32)

# A tiny ResNeXt with every GroupConv2D -> BatchNorm -> ReLU pattern the remapper fuses.
TINY = "keras_resnext.Spec(depths=(1, 1), widths=(8, 16), cardinality=4, base_width=16)"


def random_images(n, size, seed=0, channels=3):
    """Deterministic 0-255 float32 NHWC images."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(n, size, size, channels)).astype("float32")


def assert_save_load_round_trip(model, x, tmp_path):
    """Saves ``model`` as .keras, reloads it, and checks identical outputs."""
    import keras

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(restored(x, training=False)))
    return restored


# Tiny random timm models with reference logits (copied from shared/fixtures), by family.
FIXTURE_FAMILIES = {
    "resnext_tiny": "resnet",
    "resnext_tiny_d": "resnet",
    "resnest_tiny_d": "resnest",
    "resnest_tiny_4s2x": "resnest",
    "res2net_tiny": "res2net",
    "res2next_tiny_d": "res2net",
    "rexnet_tiny": "rexnet",
}


def load_fixture_config(name):
    """A fixture's JSON: timm's constructor arguments, input size, classes."""
    with open(os.path.join(FIXTURES, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def fixture_model(name, **kwargs):
    """The Keras model of a timm fixture (logits out) and the fixture's state dict."""
    from keras_resnext import convert
    from keras_resnext import families

    config = load_fixture_config(name)
    spec = families.families()[FIXTURE_FAMILIES[name]].Spec.from_config(config)
    kwargs.setdefault("classes", config["num_classes"])
    kwargs.setdefault("input_shape", (config["input_size"], config["input_size"], 3))
    model = keras_resnext.build(spec, name=name, classifier_activation=None, **kwargs)
    state_dict = convert.read_safetensors(os.path.join(FIXTURES, f"{name}.safetensors"))
    return model, state_dict


def inference(model, x):
    """``model(x, training=False)`` as NumPy; on JAX, one compiled ``predict_on_batch``.

    JAX compiles each eager op for its shapes: a first eager call of a tiny
    fixture took ~14 s on 2 shared cores, its compiled forward ~2 s.
    """
    import keras

    if keras.backend.backend() == "jax":
        return np.asarray(model.predict_on_batch(x))
    return keras.ops.convert_to_numpy(model(x, training=False))


def randomize_batch_norms(model, seed=0, mean_std=0.2, variance=(0.5, 1.5), affine=False):
    """Gives every BatchNormalization of ``model`` statistics far from 0/1, as after training.

    Moving means ~ N(0, mean_std) and variances ~ U(variance); with ``affine`` also
    gamma ~ U(0.5, 1.5) and beta ~ N(0, mean_std). One generator, layer by layer.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, mean_std, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(*variance, n).astype("float32"))
            if affine:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
                layer.beta.assign(rng.normal(0, mean_std, n).astype("float32"))


def count_trainable(model):
    """Trainable parameters, as timm/torchvision count them."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ---------------------------------------------------------------- parameter counts

# Trainable parameters as timm/torchvision count them (1000 classes), and the
# paper's CIFAR models with 10 classes (Table 7: 34.4M, 68.1M).
RESNET_PARAMS = {
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x4d": 44_177_704,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "resnext50d_32x4d": 25_048_136,
    "resnext29_8x64d": 34_426_698,
    "resnext29_16x64d": 68_155_210,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}

# Trainable parameters as timm counts them (1000 classes), FAMILIES.md's table.
RESNEST_PARAMS = {
    "resnest14d": 10_611_688,
    "resnest26d": 17_069_448,
    "resnest50d": 27_483_240,
    "resnest101e": 48_275_016,
    "resnest200e": 70_201_544,
    "resnest269e": 110_929_480,
    "resnest50d_4s2x40d": 30_417_592,
    "resnest50d_1s4x24d": 25_677_000,
}

# Trainable parameters as timm counts them (1000 classes): FAMILIES.md.
RES2NET_PARAMS = {
    "res2net50_26w_4s": 25_699_120,
    "res2net50_26w_6s": 37_051_448,
    "res2net50_26w_8s": 48_403_776,
    "res2net50_48w_2s": 25_287_304,
    "res2net50_14w_8s": 25_059_816,
    "res2net101_26w_4s": 45_206_688,
    "res2next50": 24_671_464,
    "res2net50d": 25_718_352,
    "res2net101d": 45_225_920,
}

# Trainable parameters as timm counts them (1000 classes), FAMILIES.md.
REXNET_PARAMS = {
    "rexnet_100": 4_796_873,
    "rexnet_130": 7_557_091,
    "rexnet_150": 9_728_593,
    "rexnet_200": 16_366_620,
    "rexnet_300": 34_708_792,
}


def expected_params():
    """Every family's exact parameter counts, by model name."""
    return {**RESNET_PARAMS, **RESNEST_PARAMS, **RES2NET_PARAMS, **REXNET_PARAMS}


# ---------------------------------------------------------------- child processes

def run_child(code, onednn=None, timeout=600, backend=None):
    """Runs ``code`` in a fresh Python with ``TF_ENABLE_ONEDNN_OPTS=onednn``.

    ``onednn=None`` keeps this process's setting; ``backend`` sets
    ``KERAS_BACKEND`` (TensorFlow stays importable, unlike ``run_backend_child``).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# Makes `import tensorflow` raise ImportError in a child, as where it is not installed.
NO_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None\n"


# The start of a child's code (indented like the code after it, for run_backend_child):
# ``outputs_and_grads(layer, x, dy)`` (output and the gradients of <output, dy> for the
# input and every trainable weight, by jax.grad or torch autograd) and ``relative(a, b)``
# (largest difference relative to b's largest magnitude).
GRADIENT_PARITY_CHILD = """
    import json
    import keras, numpy as np
    from keras_resnext import layers as L

    backend = keras.backend.backend()

    def outputs_and_grads(layer, x, dy):
        if backend == "jax":
            import jax, jax.numpy as jnp
            def loss(weights, x):
                y, _ = layer.stateless_call(weights, [], x)
                return jnp.vdot(y.astype("float32"), dy), y
            (gw, gx), y = jax.grad(loss, argnums=(0, 1), has_aux=True)(
                [v.value for v in layer.trainable_variables], x)
            return [y, gx, *gw]
        import torch
        x = torch.tensor(x, requires_grad=True)
        y = layer(x)
        (y.float() * torch.tensor(dy)).sum().backward()
        return [y, x.grad, *(v.value.grad for v in layer.trainable_variables)]

    def relative(a, b):
        a, b = (keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")) for t in (a, b))
        return float(np.abs(a - b).max() / np.abs(b).max())

"""


def run_backend_child(code, backend, timeout=600):
    """Runs ``code`` with ``KERAS_BACKEND=backend``, TensorFlow hidden; its last line's JSON."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW + textwrap.dedent(code)],
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# fit.py as a program, and the environment of its child processes.
FIT = os.path.join(ROOT, "training", "fit.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
           CUDA_VISIBLE_DEVICES="")

# Two logical CPU devices must exist before TensorFlow runs any op: set them
# in a fresh interpreter, then run fit.py's main() once per argument list.
TWO_CPUS = r"""
import json, runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
main = runpy.run_path(sys.argv[1])["main"]
print("CODES", json.dumps([main(argv) for argv in json.loads(sys.argv[2])]), flush=True)
"""


def free_ports(n):
    """``n`` TCP ports on localhost that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def latest_checkpoint_step(model_dir):
    """The step of the newest checkpoint fit.py wrote in ``model_dir``, or None."""
    path = os.path.join(model_dir, "checkpoints", "checkpoint")
    try:
        with open(path) as f:
            match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', f.read(), re.M)
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- a fake hub

class FakeHub:
    """The hub's ``/<repo>/resolve/<revision>/<file>`` endpoint on loopback.

    Answers HEAD and GET with the headers ``hf_hub_download`` reads (commit,
    ETag = SHA-256, size), so the real huggingface_hub code fills a real cache.
    """

    def __init__(self, files):
        self.files = files  # {(repo_id, filename): bytes}
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _file(self):
                fake.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].lstrip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    return fake.files.get(("/".join(parts[:2]), "/".join(parts[4:])))
                return None

            def _answer(self, data):
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", "c0ffee" + "0" * 34)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return True

            def do_HEAD(self):
                self._answer(self._file())

            def do_GET(self):
                data = self._file()
                if self._answer(data):
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *args):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- keras-hub recipes

def fixture_spec(name):
    """A fixture's spec, as its family's ``Spec``."""
    from keras_resnext import families

    family = families.families()[FIXTURE_FAMILIES[name]]
    return family.Spec.from_config(load_fixture_config(name))


def synthetic_boxes(n, size, num_classes, seed=0):
    """Images with 2 random boxes each (``yxyx`` pixels) and their labels."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, size / 2, (n, 2, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(size / 8, size / 2, (n, 2, 2))], -1)
    labels = rng.integers(0, num_classes, (n, 2))
    images = rng.uniform(0, 1, (n, size, size, 3))
    return (images.astype("float32"),
            {"boxes": boxes.astype("float32"), "labels": labels.astype("float32")})


def fit_two_epochs(task, encoder, x, y):
    """Fits ``task`` on 4 samples (2 epochs of 2 steps).

    Returns:
        ``loss`` per epoch, and ``kernel_change``: how far the ResNeXt's first
        grouped kernel moved (the encoder itself trained, not only the head).
    """
    import keras

    kernel = encoder.get_layer("conv2_block1_2_conv").kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    history = task.fit(x, y, batch_size=2, epochs=2, verbose=0).history
    return {"loss": [float(v) for v in history["loss"]],
            "kernel_change": float(np.abs(keras.ops.convert_to_numpy(kernel) - before).max())}


def retinanet_recipe(size):
    """docs/keras_hub.md's RetinaNet recipe on the tiny ResNeXt, ``size``-pixel images.

    Returns:
        JSON-ready: ``fit_two_epochs``' fields, ``converter_error`` (the
        detector's converter against the weights' normalisation) and the
        ``shapes`` of ``predict``'s outputs on 2 images.
    """
    import keras
    import keras_hub

    import keras_resnext.keras_hub as kh

    keras.utils.set_random_seed(0)
    encoder = kh.ResNeXtBackbone(fixture_spec("resnext_tiny"))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=7, use_p5=False,
        image_shape=(size, size, 3))
    transform = keras_resnext.EvalTransform(size=size)  # the weights' mean/std
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(
        image_converter=keras_hub.layers.RetinaNetImageConverter(
            image_size=(size, size), **kh.scale_offset(transform)))
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx",
        preprocessor=preprocessor)
    detector.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = synthetic_boxes(4, size, 3)
    images = images * 255.0  # raw pixels: the preprocessor normalises them
    converted = keras.ops.convert_to_numpy(preprocessor.image_converter(images[:1]))
    result = fit_two_epochs(detector, encoder, images, targets)
    out = detector.predict(images[:2], verbose=0)
    return {**result, "shapes": {k: list(np.shape(v)) for k, v in out.items()},
            "converter_error": float(np.abs(
                converted - np.asarray(transform.normalize(images[:1]))).max())}


# The RetinaNet recipe's predict on 2 images: keras-hub's 100 detections each.
RETINANET_SHAPES = {"boxes": [2, 100, 4], "labels": [2, 100], "confidence": [2, 100],
                    "num_detections": [2]}


def deeplabv3_recipe(size):
    """The DeepLabV3 segmenter on the tiny ResNeXt-D, ``size``-pixel images.

    Its loss is not expected to fall in 2 epochs: Adam's first step raised it
    (1.46 -> 1.80 on PyTorch, 1.44 -> 1.73 on JAX). On PyTorch it rose also
    with one batch of 4 and at lr 1e-4, and fell from the third epoch.

    Returns:
        JSON-ready: ``fit_two_epochs``' fields and ``shape``, that of
        ``predict``'s output on 2 images.
    """
    import keras
    import keras_hub

    import keras_resnext.keras_hub as kh

    keras.utils.set_random_seed(0)
    encoder = kh.ResNeXtBackbone(fixture_spec("resnext_tiny_d"))
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[6, 12, 18], low_level_feature_key="P2", image_shape=(size, size, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (4, size, size, 3)).astype("float32")
    masks = (images[..., :1] * 3).astype("int32").clip(0, 2)
    result = fit_two_epochs(segmenter, encoder, images, masks)
    return {**result, "shape": list(segmenter.predict(images[:2], verbose=0).shape)}


def assert_trained(result, loss_decreases=True):
    """A recipe's loss is finite (and went down), and the ResNeXt itself trained."""
    loss = result["loss"]
    assert all(np.isfinite(loss)) and (loss[1] < loss[0] or not loss_decreases), loss
    assert result["kernel_change"] > 0
