"""The family harness on the JAX and PyTorch backends, in processes without TensorFlow.

Keras fixes its backend when it is imported, so each backend runs in its own
child process (``KERAS_BACKEND`` set) that does every check once and prints
the numbers as JSON; the tests here assert on them. In those children
``import tensorflow`` fails as where it is not installed, so every check there
is also TensorFlow-free use: ``weights=`` from a PyTorch-layout
``.safetensors``, ``predict``, ``fit``, ``pyramid_model``, ``count_macs``,
``preprocess_input``, ``decode_predictions``, ``.keras``/``.weights.h5``.
The children run side by side, and each one, and this process (whatever its
backend: TensorFlow in the suite), saves fitted weights that all the others load.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext import extras
from keras_resnext import files

from helpers import FIXTURE_FAMILIES
from helpers import FIXTURES
from helpers import fixture_model
from helpers import inference
from helpers import random_images

TESTS = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")
HOST = "host"  # this process's writer label (its backend is keras.backend.backend())
# One fixture per family, the richest variant: fit, round trips, weights across backends.
FITTED = ("resnext_tiny_d", "resnest_tiny_4s2x", "res2next_tiny_d", "rexnet_tiny")
# Each family fits under one half-precision policy, each policy under two families.
MIXED_FIT = {"mixed_bfloat16": ("resnest_tiny_4s2x", "rexnet_tiny"),
             "mixed_float16": ("resnext_tiny_d", "res2next_tiny_d")}
FIT_SIZE = 32
# GroupConv2D vs keras.layers.Conv2D(groups): max |difference| / max |Conv2D's value|,
# outputs and gradients. Under the half-precision policies both compute in 16 bits, each
# free to accumulate in its own order: ~2.5 units of bfloat16's rounding (2**-8), ~4 of
# float16's (2**-11). (A kernel off by 0.1% gives 2e-3; a wrong group order, > 1.)
# float32: 0.0 on every backend when run alone, but once 1.15e-4 on PyTorch inside the
# loaded full suite (cause not found: both sides call the same conv2d there), so 5e-4.
GROUP_CONV_TOLERANCE = {"float32": 5e-4, "mixed_bfloat16": 1e-2, "mixed_float16": 2e-3}
# (filters, groups, strides, padding) on (2, 9, 9, filters) inputs: several groups
# per super-group and several super-groups (ResNeXt's 4 channels per group).
GROUP_CONVS = ((16, 4, 1, "same"), (64, 16, 2, "valid"), (32, 32, 1, "same"))
# A fitted model's logits, its weights read by another backend: float32 agrees to ~1e-5.
CROSS_TOLERANCE = 1e-4
# Python blocks an import whose sys.modules entry is None, and importlib.util.find_spec
# then answers None, as for a package that is not installed. (A sys.meta_path finder that
# raises breaks `import torch`, which probes optional packages with find_spec.)
BLOCK = """
    import pkgutil, sys
    for _module in pkgutil.iter_modules():
        if _module.name.startswith({prefixes!r}):
            sys.modules[_module.name] = None
"""
BLOCK_TENSORFLOW = BLOCK.format(prefixes=("tensorflow",))
RESULT = "RESULT "


def run_python(code, env=None, timeout=120):
    """Runs ``code`` in a fresh Python with the tests folder on the path."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {}),
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_child(backend, folder):
    """Starts the ``child`` of ``backend`` (TensorFlow blocked) on ``folder``."""
    code = textwrap.dedent(BLOCK_TENSORFLOW) + textwrap.dedent(f"""
        import test_backends
        test_backends.child({str(folder)!r}, {backend!r})
    """)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def child_result(process, timeout=1500):
    """The JSON a child printed; fails with its stderr if it did not finish well."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-4000:]
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    assert lines, stdout[-2000:]
    return json.loads(lines[-1][len(RESULT):])


# -- what a child does (and this process, for the weights it writes and reads) --------

def normalized_error(got, want):
    """max |got - want| / max |want|, in float32."""
    got, want = np.asarray(got, "float32"), np.asarray(want, "float32")
    return float(np.abs(got - want).max() / np.abs(want).max())


def fixture_weights(name):
    return os.path.join(FIXTURES, f"{name}.safetensors")


def check_timm_parity():
    """Each fixture built with ``weights=`` its timm state dict: logits vs timm's."""
    report = {}
    for name in sorted(FIXTURE_FAMILIES):
        model, _ = fixture_model(name, weights=fixture_weights(name))
        io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
        logits = model.predict(io["input_nhwc"], verbose=0)
        report[name] = {"error": float(np.abs(logits - io["logits"]).max()),
                        "timm_max_abs": float(np.abs(io["logits"]).max()),
                        "same_argmax": bool((logits.argmax(-1) == io["logits"].argmax(-1)).all())}
    return report


def layer_gradients(layer, x):
    """``layer(x)`` and the gradients of ``sum(y * cos(y))`` w.r.t. x, kernel and bias."""
    variables = layer.trainable_variables
    if keras.backend.backend() == "jax":
        import jax

        def loss(x, values):
            y, _ = layer.stateless_call(values, [], x)
            y32 = keras.ops.cast(y, "float32")
            return keras.ops.sum(y32 * keras.ops.cos(y32)), y

        (_, y), (dx, dvars) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            x, [v.value for v in variables])
        return [np.asarray(t, "float32") for t in [y, dx, *dvars]]
    if keras.backend.backend() == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        y = layer(x)
        y32 = y.float()
        (y32 * torch.cos(y32)).sum().backward()
        return [t.detach().float().cpu().numpy()
                for t in [y, x.grad, *(v.value.grad for v in variables)]]
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        y32 = tf.cast(y, "float32")
        loss = tf.reduce_sum(y32 * tf.cos(y32))
    return [np.asarray(t, "float32") for t in [y, *tape.gradient(loss, [x, *variables])]]


def check_group_conv():
    """Per policy: the worst normalized error of GroupConv2D vs Conv2D(groups)."""
    report = {}
    rng = np.random.default_rng(0)
    for policy in GROUP_CONV_TOLERANCE:
        worst = 0.0
        for filters, groups, strides, padding in GROUP_CONVS:
            kwargs = dict(filters=filters, kernel_size=3, strides=strides, padding=padding,
                          groups=groups, bias_initializer="glorot_uniform", dtype=policy)
            ours = keras_resnext.GroupConv2D(**kwargs)
            theirs = keras.layers.Conv2D(**kwargs)
            x = rng.normal(size=(2, 9, 9, filters)).astype("float32")
            ours.build(x.shape)
            theirs.build(x.shape)
            theirs.set_weights(ours.get_weights())
            for got, want in zip(layer_gradients(ours, x), layer_gradients(theirs, x)):
                worst = max(worst, normalized_error(got, want))
        report[policy] = worst
    return report


def fitted_model(name, policy="float32"):
    """A fixture (timm's weights, a new 3-class head) after one ``fit`` step."""
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model, state_dict = fixture_model(name, input_shape=(FIT_SIZE, FIT_SIZE, 3), classes=3)
        convert.torch_to_keras(model, state_dict, skip_head=True)
        before = [np.array(w) for w in model.trainable_weights]
        model.compile(optimizer="sgd",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = keras_resnext.preprocess_input(random_images(4, FIT_SIZE))
        history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
        unchanged = [w.path for b, w in zip(before, model.trainable_weights)
                     if np.array_equal(b, np.array(w))]
        return model, {"loss": float(history.history["loss"][0]),
                       "unchanged": unchanged, "trainable": len(before)}
    finally:
        keras.config.set_dtype_policy("float32")


def logits(model):
    """``model``'s logits on two fixed images (``inference``: compiled on JAX only)."""
    x = keras_resnext.preprocess_input(random_images(2, FIT_SIZE, seed=1))
    return inference(model, x)


def fit_and_save(folder, label):
    """Fits each ``FITTED`` fixture one step and saves it (``<label>-<fixture>.*``)."""
    report = {}
    for name in FITTED:
        model, report[name] = fitted_model(name)
        stem = os.path.join(folder, f"{label}-{name}")
        model.save(stem + ".keras")
        model.save_weights(stem + ".weights.h5")
        np.save(stem + ".npy", logits(model))
    files.atomic_write_text(os.path.join(folder, f"{label}.done"), keras.backend.backend())
    return report


def check_mixed_precision_fit():
    """Loss of one ``fit`` step under each half-precision policy (``MIXED_FIT``)."""
    return {policy: {name: fitted_model(name, policy)[1]["loss"] for name in names}
            for policy, names in MIXED_FIT.items()}


def read_saved(folder, writers, timeout=1200):
    """How far the logits of each writer's saved models are from the writer's own."""
    deadline = time.time() + timeout
    while not all(os.path.exists(os.path.join(folder, f"{w}.done")) for w in writers):
        if time.time() > deadline:
            raise TimeoutError(f"No weights from {writers} in {timeout} s")
        time.sleep(1)
    report = {}
    for writer in writers:
        for name in FITTED:
            stem = os.path.join(folder, f"{writer}-{name}")
            want = np.load(stem + ".npy")
            restored = keras.saving.load_model(stem + ".keras")
            model, _ = fixture_model(name, input_shape=(FIT_SIZE, FIT_SIZE, 3), classes=3)
            model.load_weights(stem + ".weights.h5")
            report[f"{writer}/{name}"] = {
                "keras": float(np.abs(logits(restored) - want).max()),
                "weights_h5": float(np.abs(logits(model) - want).max())}
    return report


def needs_tensorflow_messages(folder):
    """The one-line errors of what needs TensorFlow, called where it is missing.

    Args:
        folder: a new, empty folder for the outputs (none may appear).
    """
    from keras_resnext import export
    from keras_resnext import training

    model, _ = fixture_model("resnext_tiny")
    calls = {
        "eval_transform": lambda: keras_resnext.eval_transform(
            random_images(1, 40)[0], size=32),
        "export": lambda: export.export(model, os.path.join(folder, "exports"),
                                        model_name="tiny"),
        "train": lambda: training.fit(
            training.get_recipe("digits_quick"),
            training.RunOptions(model_dir=os.path.join(folder, "run"))),
    }
    messages = {}
    for what, call in calls.items():
        try:
            call()
        except extras.MissingExtraError as error:
            messages[what] = str(error)
        else:
            messages[what] = None
    messages["written"] = sorted(os.listdir(folder))
    return messages


def tensorflow_free_use():
    """What the other stages do not cover, as numbers to compare across backends."""
    model, _ = fixture_model("res2next_tiny_d", weights=fixture_weights("res2next_tiny_d"))
    images = random_images(2, 72, seed=2)
    features = keras_resnext.pyramid_model(model)(keras_resnext.preprocess_input(images))
    predictions = np.random.default_rng(3).dirichlet(np.ones(1000), size=2).astype("float32")
    try:
        import tensorflow  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    return {"tensorflow_importable": importable,
            "keras_backend": keras.backend.backend(),
            "count_macs": int(keras_resnext.count_macs(model)),
            "pyramid": {k: [list(v.shape), float(keras.ops.convert_to_numpy(v).sum())]
                        for k, v in features.items()},
            "preprocess_input": keras_resnext.preprocess_input(images)[0, 0, :2].tolist(),
            "decode_predictions": [[list(row[:2]) for row in image] for image in
                                   keras_resnext.decode_predictions(predictions, top=3)]}


def child(folder, backend):
    """One backend's whole harness; prints ``RESULT <json>`` (and seconds per stage)."""
    scratch = os.path.join(folder, backend)
    os.makedirs(os.path.join(scratch, "needs_tensorflow"))
    stages = [
        ("fit", lambda: fit_and_save(folder, backend)),
        ("parity", check_timm_parity),
        ("group_conv", check_group_conv),
        ("mixed_fit", check_mixed_precision_fit),
        ("free", tensorflow_free_use),
        ("needs_tensorflow",
         lambda: needs_tensorflow_messages(os.path.join(scratch, "needs_tensorflow"))),
        ("saved", lambda: read_saved(folder, (HOST,) + BACKENDS)),
    ]
    report, seconds = {}, {}
    for stage, run in stages:
        started = time.time()
        report[stage] = run()
        seconds[stage] = round(time.time() - started, 1)
    report["seconds"] = seconds
    print(RESULT + json.dumps(report), flush=True)


# -- the tests ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every child's report, and this process's: ``{label: report}``."""
    folder = tmp_path_factory.mktemp("backends")
    children = {b: start_child(b, folder) for b in BACKENDS}
    host = {"fit": fit_and_save(folder, HOST), "free": tensorflow_free_use()}
    results = {b: child_result(p) for b, p in children.items()}
    for backend, result in results.items():
        print(f"{backend} child, seconds per stage: {result['seconds']}")
    host["saved"] = read_saved(folder, (HOST,) + BACKENDS, timeout=10)
    return {HOST: host, **results}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fixture_logits_match_timm(runs, backend):
    parity = runs[backend]["parity"]
    assert set(parity) == set(FIXTURE_FAMILIES)
    for name, row in parity.items():
        assert row["timm_max_abs"] > 1, name  # not a comparison against ~zeros
        assert row["error"] <= 1e-4 and row["same_argmax"], (backend, name, row)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_conv_equals_keras_conv2d_groups(runs, backend):
    errors = runs[backend]["group_conv"]
    assert set(errors) == set(GROUP_CONV_TOLERANCE)
    for policy, error in errors.items():
        assert error <= GROUP_CONV_TOLERANCE[policy], (backend, policy, error)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_one_step_in_float32_and_half_precision(runs, backend):
    for name, row in runs[backend]["fit"].items():
        assert np.isfinite(row["loss"]), (backend, name, row)
        # Every weight learns but a shift just before a training-mode BatchNorm (a bias,
        # or a BN's beta before a 1x1 conv and BN), whose gradient is exactly zero.
        assert all(path.endswith(("/bias", "/beta")) for path in row["unchanged"]), row
        assert len(row["unchanged"]) < row["trainable"] / 10, (backend, name, row)
    for policy, losses in runs[backend]["mixed_fit"].items():
        assert set(losses) == set(MIXED_FIT[policy])
        assert np.isfinite(list(losses.values())).all(), (backend, policy, losses)


@pytest.mark.slow
@pytest.mark.parametrize("reader", (HOST,) + BACKENDS)
def test_saved_weights_give_the_same_logits_on_every_backend(runs, reader):
    """``.keras`` and ``.weights.h5`` from each writer: exact where written, 1e-4 elsewhere."""
    saved = runs[reader]["saved"]
    assert set(saved) == {f"{w}/{n}" for w in (HOST,) + BACKENDS for n in FITTED}
    for key, row in saved.items():
        tolerance = 0 if key.startswith(f"{reader}/") else CROSS_TOLERANCE
        assert row["keras"] <= tolerance and row["weights_h5"] <= tolerance, (reader, key, row)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_tensorflow_free_use(runs, backend):
    free, host = runs[backend]["free"], runs[HOST]["free"]
    assert not free["tensorflow_importable"] and free["keras_backend"] == backend
    for key in ("count_macs", "preprocess_input", "decode_predictions"):
        assert free[key] == host[key], (backend, key, free[key], host[key])
    assert list(free["pyramid"]) == list(host["pyramid"]) and len(host["pyramid"]) >= 4
    for level, (shape, total) in free["pyramid"].items():
        assert shape == host["pyramid"][level][0], level
        assert total == pytest.approx(host["pyramid"][level][1], rel=1e-4), level


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_what_needs_tensorflow_says_so_in_one_line(runs, backend):
    messages = runs[backend]["needs_tensorflow"]
    for what, extra in (("eval_transform", "tensorflow"), ("export", "export"),
                        ("train", "train")):
        message = messages[what]
        assert message is not None, (backend, what)
        assert "\n" not in message and "tensorflow" in message, message
        assert message.endswith(f"pip install 'keras-resnext[{extra}]'"), message
    assert messages["written"] == [], messages["written"]  # nothing half-written


BAD_BACKEND = """
    import json, sys
    try:
        import keras_resnext
    except Exception as error:
        print(json.dumps({"type": type(error).__name__, "message": str(error),
                          "keras_imported": "keras" in sys.modules}))
    else:
        print(json.dumps({"type": None}))
"""


@pytest.mark.parametrize("case", ["torch", "jax", "unknown", "keras_json", "default"])
def test_a_backend_that_is_not_installed_is_one_line_at_import(case, tmp_path):
    """The package's error names the backend and its install command, before Keras loads."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    env = {"KERAS_HOME": str(keras_home), "KERAS_BACKEND": ""}
    blocked = {"torch": ("torch",), "jax": ("jax",), "unknown": (),
               "keras_json": ("torch",), "default": ("tensorflow",)}[case]
    if case in ("torch", "jax"):
        env["KERAS_BACKEND"] = case
    if case == "unknown":
        env["KERAS_BACKEND"] = "tensorflw"
    if case == "keras_json":
        (keras_home / "keras.json").write_text(json.dumps({"backend": "torch"}))
    code = BLOCK.format(prefixes=blocked) + BAD_BACKEND
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert not got["keras_imported"], got
    if case == "unknown":
        assert got["type"] == "ValueError", got
        assert got["message"] == (
            "Unknown Keras backend. Received: 'tensorflw' (KERAS_BACKEND=tensorflw). "
            "Accepted: jax, numpy, openvino, tensorflow, torch")
        return
    name = {"torch": "torch", "jax": "jax", "keras_json": "torch",
            "default": "tensorflow"}[case]
    source = {"torch": "KERAS_BACKEND=torch", "jax": "KERAS_BACKEND=jax",
              "keras_json": f"from {keras_home / 'keras.json'}",
              "default": "Keras' default"}[case]
    assert got["type"] == "MissingExtraError", got
    assert got["message"].startswith(
        f"Keras backend {name!r} ({source}) is not installed: "
        f"pip install 'keras-resnext[{name}]', or set KERAS_BACKEND to an installed one ("), got
    assert name not in got["message"].split("installed one (")[1], got


def test_extras_name_each_backend():
    assert {"tensorflow", "jax", "torch"} <= set(extras.EXTRAS)
    assert not any(extras.missing(b) for b in BACKENDS)  # [test] installs every backend
