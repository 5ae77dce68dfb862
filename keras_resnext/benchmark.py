"""Throughput, latency and memory: ResNeXt-50 and its relatives vs ResNet-50, per backend.

All candidates run in one process, interleaved round by round, so that machine
noise hits them alike; ratios against keras.applications' ResNet-50 in the
same run are what to quote. Each backend times its own compiled path, the one
its users train and serve with:

- TensorFlow: a ``tf.function`` step (no XLA: ``GradientTape`` + optimizer)
  and a ``tf.function`` forward.
- JAX: a ``jax.jit`` step (``model.stateless_call`` + ``jax.value_and_grad``
  + ``optimizer.stateless_apply``, what Keras' own JAX trainer compiles) and a
  ``jax.jit`` forward.
- PyTorch: an eager step (forward, ``backward``, ``optimizer.apply``, what
  Keras' PyTorch trainer runs by default) and an eager forward under
  ``torch.no_grad``.

Batch-1 latency is measured through ``model.predict`` on one image (its
per-call overhead, a dataset and a callback loop per call, is what users see),
through ``model.predict_on_batch`` (Keras' single-batch entry point, no
dataset) and through the compiled forward.
Peak resident memory (Linux VmHWM) of inference and of a training step is
measured per model in a fresh child process (``measure_memory``).
The report records the CPU's vector flags and, on TensorFlow, whether oneDNN
is on, which decide the grouped-convolution kernels (keras_resnext.layers).
"""

import json
import os
import platform
import statistics
import time

import keras
import numpy as np

from keras_resnext import cli
from keras_resnext import files
from keras_resnext import folding
from keras_resnext import layers as layers_lib
from keras_resnext import model as model_lib

BACKENDS = ("tensorflow", "jax", "torch")
# Dtype policies the step functions support (mixed_float16 would need loss scaling).
POLICIES = ("float32", "mixed_bfloat16")
MODES = ("train", "infer", "latency")
BASELINE = "keras.applications.ResNet50"
# The machine-state key of TF_ONEDNN_ASSUME_FROZEN_WEIGHTS, where it is set.
FROZEN_WEIGHTS_KEY = "onednn_frozen_weights"
OURS = "ResNeXt-50 32x4d (GroupConv2D)"
KERAS_GROUPED = "ResNeXt-50 32x4d (keras Conv2D(groups=32))"
OUR_RESNET = "ResNet-50 (keras_resnext: fused BatchNorm)"
# Inference only (keras_resnext.fold_batch_norm): not trained, no memory column.
FOLDED_MARK = "BatchNorm folded, inference)"
FOLDED_SUFFIX = " (" + FOLDED_MARK
FOLDED = "ResNeXt-50 32x4d" + FOLDED_SUFFIX
# Registered models benchmarked by default besides ResNeXt-50 (one per family),
# and this package's own ResNet-50 (listed as OUR_RESNET).
FAMILY_MODELS = ("resnest50d", "res2net50_26w_4s", "res2next50", "rexnet_100")
DEFAULT_MODELS = ("resnet50", *FAMILY_MODELS)
# Folded copies of the candidates whose label names their variant in brackets.
_FOLDED_LABELS = {OURS: FOLDED, OUR_RESNET: "ResNet-50 (keras_resnext, " + FOLDED_MARK}


def with_keras_grouped_conv(model):
    """A copy of ``model`` whose GroupConv2D layers are plain ``Conv2D(groups)``.

    Keras then routes them through its own grouped convolution (XLA-compiled
    on TensorFlow, ``feature_group_count`` on JAX), which is what a user of
    ``keras.layers.Conv2D(groups=C)`` gets.
    """

    def clone(layer):
        if isinstance(layer, layers_lib.GroupConv2D):
            return keras.layers.Conv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def build_candidate(label, size, classes=1000):
    """Builds one candidate by its label (see ``candidate_labels``)."""
    shape = dict(input_shape=(size, size, 3), classes=classes, classifier_activation=None)
    if label == BASELINE:
        return keras.applications.ResNet50(weights=None, **shape)
    if label == OUR_RESNET:
        return model_lib.build("resnet50", **shape)
    if is_folded(label):
        return folding.fold_batch_norm(build_candidate(_unfolded(label), size, classes))
    if label in (OURS, KERAS_GROUPED):
        ours = model_lib.build("resnext50_32x4d", **shape)
        return ours if label == OURS else with_keras_grouped_conv(ours)
    return model_lib.build(label, **shape)


def folded_label(label):
    """The label of ``label``'s model with BatchNorm folded (``fold_batch_norm``)."""
    return _FOLDED_LABELS.get(label, label + FOLDED_SUFFIX)


def is_folded(label):
    """Whether ``label`` names a folded copy (inference and latency only)."""
    return label.endswith(FOLDED_MARK)


def _unfolded(label):
    names = {v: k for k, v in _FOLDED_LABELS.items()}
    return names.get(label, label.removesuffix(FOLDED_SUFFIX))


def candidate_labels(models=DEFAULT_MODELS, keras_grouped=True, folded=False):
    """The models compared: keras.applications' ResNet-50 (the baseline), then ours.

    Args:
        models: further registered model names (``"resnet50"``: ``OUR_RESNET``).
        keras_grouped: include ResNeXt-50 with Keras' own grouped Conv2D.
        folded: after each of our models, its copy with BatchNorm folded
            (inference and latency only; not the Keras grouped-conv copy).
    """
    ours = [OUR_RESNET] if "resnet50" in models else []
    ours += [OURS, *([KERAS_GROUPED] if keras_grouped else []),
             *(m for m in models if m not in ("resnet50", "resnext50_32x4d"))]
    if folded:
        ours = [x for label in ours
                for x in ([label] if label == KERAS_GROUPED else [label, folded_label(label)])]
    return [BASELINE, *ours]


def candidates(size, classes=1000, models=DEFAULT_MODELS, keras_grouped=True, folded=False):
    """The models compared, by label, built (``candidate_labels``)."""
    return {label: build_candidate(label, size, classes)
            for label in candidate_labels(models, keras_grouped, folded)}


def check_backend(backend):
    """Raises ValueError unless Keras runs ``backend`` (picked before keras is imported)."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: {backend!r}")
    if keras.backend.backend() != backend:
        raise ValueError(
            f"Keras runs the {keras.backend.backend()!r} backend, not {backend!r}: set "
            f"KERAS_BACKEND={backend} before keras is imported (applications/benchmark.py "
            "--backend does).")


# --------------------------------------------------------------------------- step functions


def compiled_functions(model):
    """``(train_step(x, y) -> loss, infer(x) -> logits)`` for the current backend.

    See the module docstring for what each backend compiles.
    """
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    make = {"tensorflow": _tensorflow_functions, "jax": _jax_functions,
            "torch": _torch_functions}[keras.backend.backend()]
    return make(model, optimizer, loss_fn)


def _tensorflow_functions(model, optimizer, loss_fn):
    import tensorflow as tf

    @tf.function(jit_compile=False)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function(jit_compile=False)
    def infer(x):
        return model(x, training=False)

    return train_step, infer


def _jax_functions(model, optimizer, loss_fn):
    import jax

    def loss_and_state(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x,
                                                     training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

    @jax.jit
    def jit_step(state, x, y):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads,
                                                              trainable)
        return (trainable, non_trainable, optimizer_vars), loss

    jit_infer = jax.jit(lambda trainable, non_trainable, x: model.stateless_call(
        trainable, non_trainable, x, training=False)[0])
    state = [[v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables]]

    def train_step(x, y):
        state[:], loss = jit_step(tuple(state), x, y)
        return loss

    def infer(x):
        # The variables' current values: ``model.predict`` (the latency measure) may
        # replace and delete the arrays captured above (it did for a folded model).
        return jit_infer([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables], x)

    return train_step, infer


def _torch_functions(model, optimizer, loss_fn):
    import torch

    def train_step(x, y):
        model.zero_grad()
        loss = loss_fn(y, model(x, training=True))
        loss.backward()
        optimizer.apply([v.value.grad for v in model.trainable_variables],
                        model.trainable_variables)
        return loss

    def infer(x):
        with torch.no_grad():
            return model(x, training=False)

    return train_step, infer


def _time(fn, args, steps):
    """Seconds per call of ``fn(*args)``, waiting for the last result."""
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    keras.ops.convert_to_numpy(out)  # waits for asynchronous backends (JAX, GPUs)
    return (time.perf_counter() - start) / steps


# --------------------------------------------------------------------------- machine


def _cpu_model_and_flags():
    cpu, flags = platform.processor() or "unknown CPU", set()
    named = False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not named:
                    cpu, named = line.split(":", 1)[1].strip(), True
                elif line.startswith("flags"):
                    flags.update(f for f in line.split(":", 1)[1].split()
                                 if f == "avx2" or f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return cpu, sorted(flags)


def tensorflow_onednn_enabled():
    """Whether TensorFlow runs oneDNN kernels; None where TensorFlow is not installed."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_description():
    """The CPU model, its vector flags, and the oneDNN state of the Keras backend.

    Returns:
        ``dict(cpu=..., cpu_flags=[avx2/avx512*/amx* flags], onednn_enabled=...,
        onednn_setting=...)``. Under TensorFlow, ``onednn_enabled`` is whether
        TensorFlow runs oneDNN and ``onednn_setting`` is TF_ENABLE_ONEDNN_OPTS
        (or "unset (default)"); under PyTorch, whether its oneDNN (mkldnn)
        kernels are on; under JAX (XLA's own CPU kernels), None.
    """
    cpu, flags = _cpu_model_and_flags()
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        enabled = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
        setting = "torch.backends.mkldnn"
    elif backend == "tensorflow":
        enabled = tensorflow_onednn_enabled()
        setting = os.environ.get(cli.ONEDNN_ENV, "unset (default)")
    else:
        enabled, setting = None, "n/a (XLA CPU kernels)"
    out = {"cpu": cpu, "cpu_flags": flags, "onednn_enabled": enabled,
           "onednn_setting": setting}
    if backend == "tensorflow" and cli.FROZEN_WEIGHTS_ENV in os.environ:
        # It changes batch-1 inference by ~25% (docs/cpu.md): part of the state.
        out[FROZEN_WEIGHTS_KEY] = os.environ[cli.FROZEN_WEIGHTS_ENV]
    return out


def _accelerators(backend):
    """``(device kind, [accelerator names])`` as the backend sees them."""
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform != "cpu"]
        return ("gpu" if devices else "cpu"), [d.device_kind for d in devices]
    if backend == "torch":
        import torch

        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ("gpu" if names else "cpu"), names
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ("gpu" if gpus else "cpu"), [g.name for g in gpus]


def _library_versions(backend):
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    versions[module] = __import__(module).__version__
    return versions


def machine_description():
    """Backend, CPU, oneDNN state, logical cores, accelerators and library versions."""
    backend = keras.backend.backend()
    device, accelerators = _accelerators(backend)
    return {"backend": backend, **cpu_description(), "logical_cores": os.cpu_count(),
            "device": device, "gpus": len(accelerators), "accelerators": accelerators,
            **_library_versions(backend)}


# --------------------------------------------------------------------------- memory


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss():
    """Resets the process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(label, *, size, batch, policy="float32", steps=2):
    """Peak resident memory of one model's inference and training step, this process.

    Meant for a fresh process per model (``memory_in_child``): builds the
    model, then runs ``steps`` inference calls and ``steps`` training steps,
    reading the peak RSS (Linux ``VmHWM``) after each phase, reset in between.
    Where it cannot be reset, inference runs first and the training figure is
    the peak of both (training needs more in practice).

    Returns:
        ``dict(built_rss_mb, infer_peak_rss_mb, train_peak_rss_mb, peak_reset)``:
        RSS after the build, and the two peaks, in MiB.
    """
    keras.config.set_dtype_policy(policy)
    model = build_candidate(label, size)
    train_step, infer = compiled_functions(model)
    x, y = _inputs(batch, size)
    built = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    _time(infer, (x,), steps)
    infer_peak = _status_kib("VmHWM")
    reset = _reset_peak_rss() and reset
    _time(train_step, (x, y), steps)
    train_peak = _status_kib("VmHWM")
    return {"built_rss_mb": built / 1024, "infer_peak_rss_mb": infer_peak / 1024,
            "train_peak_rss_mb": train_peak / 1024, "peak_reset": reset}


def memory_in_child(label, *, size, batch, policy="float32", steps=2, timeout=3600):
    """``measure_memory`` in a fresh Python with the current Keras backend."""
    import subprocess
    import sys

    code = ("import json, sys; from keras_resnext import benchmark; "
            "print(json.dumps(benchmark.measure_memory(**json.loads(sys.argv[1]))))")
    kwargs = dict(label=label, size=size, batch=batch, policy=policy, steps=steps)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {label!r} failed: "
                           f"{result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- run


def _inputs(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.uniform(-1, 1, (batch, size, size, 3)),
                                    dtype="float32")
    y = keras.ops.convert_to_tensor(rng.integers(0, 1000, batch), dtype="int32")
    return x, y


def _check_settings(size, batch, rounds, steps, latency_steps, modes, policy):
    if size < 32 or min(batch, rounds, steps, latency_steps) < 1:
        raise ValueError(
            "Need size >= 32, batch >= 1, rounds >= 1, steps >= 1, latency_steps >= 1. "
            f"Received: size={size}, batch={batch}, rounds={rounds}, steps={steps}, "
            f"latency_steps={latency_steps}")
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"`modes` must be some of {MODES}. Received: {sorted(modes)}")
    if policy not in POLICIES:
        raise ValueError(f"`policy` must be one of {POLICIES}. Received: {policy!r}")
    if "train" in modes:
        cli.refuse_frozen_weights("Timing training")


def _timed_calls(label, model, modes, batch, size, steps, slow_steps, latency_steps):
    """``{(label, measure): (fn, args, steps)}`` for one model, its functions traced."""
    train_step, infer = compiled_functions(model)
    x, y = _inputs(batch, size)
    one = _inputs(1, size)[0]
    one_numpy = keras.ops.convert_to_numpy(one)
    calls = {}
    if "train" in modes and not is_folded(label):
        calls[label, "train"] = (train_step, (x, y),
                                 slow_steps if label == KERAS_GROUPED else steps)
    if "infer" in modes:
        calls[label, "infer"] = (infer, (x,), steps)
    if "latency" in modes:
        calls[label, "latency_call"] = (infer, (one,), latency_steps)
        calls[label, "latency_predict"] = (
            lambda v: model.predict(v, batch_size=1, verbose=0), (one_numpy,), latency_steps)
        calls[label, "latency_predict_on_batch"] = (
            model.predict_on_batch, (one_numpy,), latency_steps)
    return calls


def run(*, backend=None, size=112, batch=16, rounds=3, warmup=1, steps=2, slow_steps=1,
        latency_steps=5, modes=MODES, models=DEFAULT_MODELS, keras_grouped=True,
        folded=False, memory=True, policy="float32", log=print):
    """Measures every candidate, interleaved over ``rounds``, on the current backend.

    Args:
        backend: the Keras backend expected (ValueError if Keras runs another);
            None: whichever runs.
        size: input resolution.
        batch: batch size of training and inference throughput.
        rounds: measurement rounds; the median time per call is reported.
        warmup: untimed calls per candidate and measure (tracing, compiling).
        steps: timed steps per round.
        slow_steps: timed training steps per round for the Keras grouped-conv
            candidate, which is tens of times slower.
        latency_steps: timed batch-1 calls per round.
        modes: some of ``"train"``, ``"infer"``, ``"latency"`` (batch 1).
        models: further registered model names to measure (``candidate_labels``).
        keras_grouped: also measure Keras' own grouped Conv2D (slow: minutes).
        folded: also measure each of our models with BatchNorm folded (not in training).
        memory: also measure peak RSS per model (a child process each).
        policy: Keras dtype policy, ``"float32"`` or ``"mixed_bfloat16"``.
        log: progress printer.

    Returns:
        A dict with the machine, the settings and per-candidate results.
    """
    _check_settings(size, batch, rounds, steps, latency_steps, modes, policy)
    if backend is not None:
        check_backend(backend)
    keras.config.set_dtype_policy(policy)
    labels = candidate_labels(models, keras_grouped, folded)
    params, macs, calls = {}, {}, {}
    for label in labels:
        model = build_candidate(label, size)
        params[label] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        macs[label] = int(model_lib.count_macs(model))
        calls.update(_timed_calls(label, model, modes, batch, size, steps, slow_steps,
                                  latency_steps))
    for (label, measure), (fn, args, _) in calls.items():
        start = time.perf_counter()
        _time(fn, args, warmup)
        log(f"warm-up {measure:15s} {label}: {time.perf_counter() - start:.1f}s")
    times = {key: [] for key in calls}
    for r in range(rounds):
        for (label, measure), (fn, args, n) in calls.items():
            times[label, measure].append(_time(fn, args, n))
            log(f"round {r + 1}/{rounds} {measure:15s} {label}: "
                f"{1e3 * times[label, measure][-1]:.1f} ms")
    medians = {key: statistics.median(t) for key, t in times.items()}
    rows = [_result_row(label, params[label], macs[label], medians, batch) for label in labels]
    if memory:
        _add_memory(rows, size=size, batch=batch, policy=policy, log=log)
    return {"machine": machine_description(),
            "settings": {"size": size, "batch": batch, "rounds": rounds, "warmup": warmup,
                         "steps": steps, "slow_steps": slow_steps,
                         "latency_steps": latency_steps, "dtype": policy,
                         "compiled": COMPILED[keras.backend.backend()]},
            "results": rows,
            "train_speedup_vs_keras_grouped_conv": _keras_grouped_speedup(medians)}


# How each backend's timed functions run (the report's "Settings" line).
COMPILED = {
    "tensorflow": "tf.function, XLA off (the Keras grouped Conv2D forces it on for its own op)",
    "jax": "jax.jit (XLA)",
    "torch": "eager (Keras' default on PyTorch)",
}


def _result_row(label, params, macs, medians, batch):
    # Work per image: keras.applications' ResNet-50 is v1 (stride on the first 1x1,
    # ~3.9 GMACs at 224 px), this package's ResNet-50 and ResNeXt-50 are v1.5
    # (stride on the 3x3, 4.1 and 4.2), so equal efficiency is not a ratio of 1.
    row = {"model": label, "params": params, "gmacs": macs / 1e9}
    for mode in ("train", "infer"):
        if (label, mode) in medians:
            row[f"{mode}_img_per_s"] = batch / medians[label, mode]
            row[f"{mode}_vs_resnet50"] = medians[BASELINE, mode] / medians[label, mode]
    for kind in ("call", "predict", "predict_on_batch"):
        key = f"latency_{kind}"
        if (label, key) in medians:
            row[f"{key}_ms"] = 1e3 * medians[label, key]
            row[f"{key}_vs_resnet50"] = medians[BASELINE, key] / medians[label, key]
    return row


def _keras_grouped_speedup(medians):
    if (KERAS_GROUPED, "train") not in medians:
        return None
    return medians[KERAS_GROUPED, "train"] / medians[OURS, "train"]


def _add_memory(rows, *, size, batch, policy, log):
    """Adds peak RSS per model (not the Keras grouped-conv copy: minutes on JAX; not
    the folded copies, which are not trained)."""
    for row in rows:
        if row["model"] == KERAS_GROUPED or is_folded(row["model"]):
            continue
        start = time.perf_counter()
        row.update(memory_in_child(row["model"], size=size, batch=batch, policy=policy))
        log(f"memory {row['model']}: infer {row['infer_peak_rss_mb']:.0f} MiB, train "
            f"{row['train_peak_rss_mb']:.0f} MiB ({time.perf_counter() - start:.0f}s)")
    base = next(r for r in rows if r["model"] == BASELINE)
    for row in rows:
        for mode in ("infer", "train"):
            if f"{mode}_peak_rss_mb" in row:
                row[f"{mode}_rss_vs_resnet50"] = (row[f"{mode}_peak_rss_mb"]
                                                  / base[f"{mode}_peak_rss_mb"])


# --------------------------------------------------------------------------- report

BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def heading(report):
    """The report's section title: backend, device, oneDNN state (TensorFlow), policy."""
    m, s = report["machine"], report["settings"]
    backend = m.get("backend", "tensorflow")  # reports before 2026-12 were TensorFlow's
    title = f"{BACKEND_NAMES[backend]}, {m.get('device', 'cpu').upper()}"
    if backend == "tensorflow":
        title += (f", oneDNN {'on' if m['onednn_enabled'] else 'off'} "
                  f"(TF_ENABLE_ONEDNN_OPTS={m['onednn_setting']})")
        if FROZEN_WEIGHTS_KEY in m:
            title += f", {cli.FROZEN_WEIGHTS_ENV}={m[FROZEN_WEIGHTS_KEY]}"
    if s.get("dtype", "float32") != "float32" or s["batch"] != 16:
        title += f", {s.get('dtype', 'float32')}, batch {s['batch']}"
    if not any("train_img_per_s" in row for row in report["results"]):
        title += ", inference only"  # a longer run of some modes beside a full one
    return "## " + title


def _machine_line(m):
    backend = m.get("backend", "tensorflow")
    library = f"{BACKEND_NAMES[backend]} {m.get(backend, '?')}"
    accelerators = ", ".join(m.get("accelerators") or []) or f"{m.get('gpus', 0)} GPUs"
    onednn = ""
    if backend == "torch":
        onednn = f"; PyTorch oneDNN (mkldnn) {'on' if m['onednn_enabled'] else 'off'}"
    return (f"Machine: {m['cpu']} (flags: {' '.join(m['cpu_flags']) or 'no avx2/avx512/amx'}), "
            f"{m['logical_cores']} logical cores, {accelerators}; Python {m['python']}, "
            f"{library}, Keras {m['keras']}{onednn}.")


def _cell(row, value_key, ratio_key, fmt):
    if value_key not in row:
        return ""
    if ratio_key is None:
        return fmt.format(row[value_key])
    return f"{fmt.format(row[value_key])} ({row[ratio_key]:.2f}x)"


# (column title, value key, ratio key, format); a column shows where some row has it.
COLUMNS = (
    ("GMACs", "gmacs", None, "{:.2f}"),
    ("train img/s", "train_img_per_s", "train_vs_resnet50", "{:.2f}"),
    ("infer img/s", "infer_img_per_s", "infer_vs_resnet50", "{:.2f}"),
    ("batch-1 call ms", "latency_call_ms", "latency_call_vs_resnet50", "{:.1f}"),
    ("batch-1 predict ms", "latency_predict_ms", "latency_predict_vs_resnet50", "{:.1f}"),
    ("batch-1 predict_on_batch ms", "latency_predict_on_batch_ms",
     "latency_predict_on_batch_vs_resnet50", "{:.1f}"),
    ("infer peak RSS MiB", "infer_peak_rss_mb", "infer_rss_vs_resnet50", "{:.0f}"),
    ("train peak RSS MiB", "train_peak_rss_mb", "train_rss_vs_resnet50", "{:.0f}"),
)


def markdown(report):
    """The benchmark report as a markdown section.

    Every cell holds the value and its ratio to keras.applications' ResNet-50 in
    the same run: speed ratios above 1 are faster (for latency: its time over
    ours), memory ratios above 1 use more.
    """
    m, s = report["machine"], report["settings"]
    columns = [c for c in COLUMNS if any(c[1] in row for row in report["results"])]
    steps = f"{s['steps']} steps each"
    if "latency_steps" in s:
        steps += f", {s['latency_steps']} batch-1 calls"
    # A "note" added to the JSON by hand (what differs about the run) is kept with it.
    lines = [heading(report), ""] + ([report["note"], ""] if report.get("note") else []) + [
        _machine_line(m),
        f"Settings: batch {s['batch']}, {s['size']}x{s['size']} px, {s.get('dtype', 'float32')}, "
        f"median of {s['rounds']} interleaved rounds ({steps}; {s['slow_steps']} training "
        f"steps for the Keras grouped-conv candidate); timed: "
        f"{s.get('compiled') or 'tf.function, XLA ' + s.get('xla', 'off')}.",
        "",
        "| model | params | " + " | ".join(c[0] for c in columns) + " |",
        "|" + "---|" * (2 + len(columns)),
    ]
    for row in report["results"]:
        cells = [row["model"], f"{row['params']:,}"] + [_cell(row, *c[1:]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("train_speedup_vs_keras_grouped_conv"):
        lines += ["", "ResNeXt-50 training step with `GroupConv2D` vs Keras' "
                  f"`Conv2D(groups=32)`: {report['train_speedup_vs_keras_grouped_conv']:.1f}x faster."]
    if any(row.get("peak_reset") is False for row in report["results"]):
        lines += ["", "Peak RSS could not be reset between inference and training here: the "
                  "training figure is the peak of both."]
    return "\n".join(lines) + "\n"


INTRO = """# Benchmarks

Written by `applications/benchmark.py --backend tensorflow|jax|torch --size 224 --batch 16 --out docs`
(`--help` for the options; on TensorFlow, once with `TF_ENABLE_ONEDNN_OPTS=0` and once with `=1`):
one section per backend, device, oneDNN state (TensorFlow), dtype policy and batch size, each run on
the machine it names. What to quote are the ratios (in brackets) against
`keras.applications.ResNet50` on the same backend, measured in the same run, round by round, since
these machines are noisy. That baseline is ResNet v1 (stride on the first 1x1: 3.86 GMACs per image
at 224 px); ResNeXt-50 (4.23), this package's ResNet-50 (4.09, torchvision's v1.5: stride on the
3x3) and the families do more work per image (the GMACs column, `keras_resnext.count_macs`), so
equal efficiency per multiply-add is a ratio of 3.86 / GMACs, not 1 (0.91x for ResNeXt-50, 0.72x
for resnest50d at 5.37). What each backend times (its
compiled path), how batch-1 latency and peak memory are measured: `keras_resnext/benchmark.py`'s
docstring, summed up in [cpu.md](cpu.md). Peak RSS is the whole process's (framework, weights,
activations), each model in a fresh process. GPU runs: `tools/gpu_check.sh` (at the end).

Why oneDNN matters, and which grouped-convolution graph runs on each backend: [cpu.md](cpu.md).
The ResNet-50 baseline is keras.applications' model as shipped (Keras BatchNormalization); this
package's own ResNet-50 (same layers as its ResNeXt-50, fused BatchNorm) is listed for the
like-for-like ratio. The `Conv2D(groups=32)` candidate is the same ResNeXt-50 with only its
grouped convolutions swapped for Keras' own (XLA-compiled on TensorFlow, `feature_group_count`
on JAX).

"""

GPU_SECTION = """
## GPUs

Not measured yet. `tools/gpu_check.sh` is the prepared check for a machine with a CUDA GPU, JAX and
PyTorch and no TensorFlow or package index (e.g. the device tool's `nvidia-h200`): fixture parity
(every test fixture against timm's logits, TF32 off) and `tests/test_grouped_ops.py` on JAX and
PyTorch; this benchmark on both (ResNeXt-50 vs keras.applications ResNet-50, batch 64 and 128,
`float32` and `mixed_bfloat16`, batch-1 latency); timm's `resnext50_32x4d` and `resnet50` on the
same GPU (channels-last, eager, float32 and bfloat16 autocast). On a GPU, JAX keeps Keras'
grouped and depthwise ops (cuDNN); PyTorch uses the same copy-free path as on a CPU.

```bash
# here, with the package index, in the repository root (wheels: keras, namex, optree, this package)
echo /.whl/ >> .git/info/exclude && tools/gpu_check.sh --download
# there (device tool: carry [".whl"]); two calls that fit its 10-minute limit; results in $OUT
tools/gpu_check.sh "$OUT" parity torch timm
tools/gpu_check.sh "$OUT" jax
# here, first: the same code on a CPU with tiny sizes (timm replaced by a stand-in if missing)
tools/gpu_check.sh /tmp/gpu_smoke --cpu-smoke
```

It writes `gpu_check.md` (parity, timm table), `gpu_check.json`, `benchmarks.md` (this page's
format, one section per backend, policy and batch) and `gpu_check.log` under `$OUT`, after
every stage; copy the tables here with the GPU named.
"""


def report_path(out_dir, report):
    """One JSON per backend, device, oneDNN state (TensorFlow), policy and batch.

    TensorFlow on a CPU in float32 at batch 16 keeps its earlier names,
    ``benchmarks_onednn_{on,off}.json``.
    """
    m, s = report["machine"], report["settings"]
    backend = m.get("backend", "tensorflow")
    parts = ([f"onednn_{'on' if m['onednn_enabled'] else 'off'}"] if backend == "tensorflow"
             else [backend])
    if m.get("device", "cpu") != "cpu":
        parts.append(m["device"])
    if FROZEN_WEIGHTS_KEY in m:
        parts.append(f"frozen_weights_{m[FROZEN_WEIGHTS_KEY]}")
    if s.get("dtype", "float32") != "float32":
        parts.append(s["dtype"])
    if s["batch"] != 16:
        parts.append(f"b{s['batch']}")
    return os.path.join(out_dir, f"benchmarks_{'_'.join(parts)}.json")


def _report_order(report):
    m, s = report["machine"], report["settings"]
    backend = m.get("backend", "tensorflow")
    return (m.get("device", "cpu") != "cpu", BACKENDS.index(backend),
            bool(m.get("onednn_enabled")), FROZEN_WEIGHTS_KEY in m,
            s.get("dtype", "float32"), s["batch"])


def write(report, out_dir):
    """Writes the run's JSON and rewrites ``benchmarks.md`` from every JSON in ``out_dir``.

    Runs on other backends, oneDNN states, policies or batch sizes are kept
    beside it (one JSON each), so that the runs together give the full page.
    """
    os.makedirs(out_dir, exist_ok=True)
    files.atomic_write_text(report_path(out_dir, report), json.dumps(report, indent=2))
    render(out_dir)


def render(out_dir):
    """Rewrites ``benchmarks.md`` in ``out_dir`` from every ``benchmarks_*.json`` there."""
    reports = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("benchmarks_") and name.endswith(".json"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as f:
                reports.append(json.load(f))
    reports.sort(key=_report_order)
    files.atomic_write_text(os.path.join(out_dir, "benchmarks.md"),
                            INTRO + "\n".join(markdown(r) for r in reports) + GPU_SECTION)
