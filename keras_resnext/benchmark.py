"""Throughput benchmark: ResNeXt-50 with GroupConv2D vs Keras' grouped Conv2D vs ResNet-50.

All candidates run in one process, interleaved round by round, so that machine
noise hits them alike; ratios against the ResNet-50 baseline of the same run
are what to quote. Timing is wall clock around a ``tf.function`` step (no XLA)
after warm-up steps. The report records the CPU's vector flags and whether
oneDNN is on, which decide the grouped-convolution kernels (keras_resnext.layers);
one JSON is kept per oneDNN state and the markdown shows all of them.
"""

import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_resnext import files
from keras_resnext import layers as layers_lib
from keras_resnext import model as model_lib


def with_keras_grouped_conv(model):
    """A copy of ``model`` whose GroupConv2D layers are plain ``Conv2D(groups)``.

    Keras then routes them through its XLA-compiled grouped convolution, which
    is what a user of ``keras.layers.Conv2D(groups=C)`` gets.
    """

    def clone(layer):
        if isinstance(layer, layers_lib.GroupConv2D):
            return keras.layers.Conv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


# Registered models benchmarked by default besides ResNeXt-50 (one per family).
FAMILY_MODELS = ("resnest50d", "res2net50_26w_4s", "res2next50", "rexnet_100")


def candidates(size, classes=1000, models=FAMILY_MODELS, keras_grouped=True):
    """The models compared, by label; ResNet-50 (keras.applications) is the baseline.

    Args:
        size: input resolution.
        classes: classifier width.
        models: further registered model names to add.
        keras_grouped: include ResNeXt-50 with Keras' own (XLA) grouped Conv2D.
    """
    ours = model_lib.build("resnext50_32x4d", input_shape=(size, size, 3),
                           classes=classes, classifier_activation=None)
    extra = {name: model_lib.build(name, input_shape=(size, size, 3), classes=classes,
                                   classifier_activation=None) for name in models}
    if keras_grouped:
        extra = {"ResNeXt-50 32x4d (keras Conv2D(groups=32))": with_keras_grouped_conv(ours),
                 **extra}
    return {
        "keras.applications.ResNet50": keras.applications.ResNet50(
            weights=None, input_shape=(size, size, 3), classes=classes,
            classifier_activation=None),
        "ResNet-50 (keras_resnext: fused BatchNorm)": model_lib.build(
            "resnet50", input_shape=(size, size, 3), classes=classes,
            classifier_activation=None),
        "ResNeXt-50 32x4d (GroupConv2D)": ours,
        **extra,
    }


def _train_step_fn(model):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def _infer_fn(model):
    @tf.function(jit_compile=False)
    def infer(x, y):
        del y
        return model(x, training=False)

    return infer


def _time(fn, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(x, y)
    np.asarray(out)  # wait for the result
    return (time.perf_counter() - start) / steps


def cpu_description():
    """The CPU model, its vector flags that matter to TensorFlow, and oneDNN's state.

    Returns:
        ``dict(cpu=..., cpu_flags=[avx2/avx512*/amx* flags], onednn_enabled=bool,
        onednn_setting=TF_ENABLE_ONEDNN_OPTS or "unset (default)")``.
    """
    from tensorflow.python.util import _pywrap_util_port

    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == (platform.processor() or
                                                             "unknown CPU"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags.update(f for f in line.split(":", 1)[1].split()
                                 if f == "avx2" or f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return {"cpu": cpu, "cpu_flags": sorted(flags),
            "onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()),
            "onednn_setting": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (default)")}


def machine_description():
    """CPU, oneDNN state, logical cores and library versions, for the results table."""
    return {
        **cpu_description(),
        "logical_cores": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def run(*, size=112, batch=16, rounds=3, warmup=1, steps=2, slow_steps=1,
        modes=("train", "infer"), models=FAMILY_MODELS, keras_grouped=True, log=print):
    """Measures images/s of every candidate, interleaved over ``rounds``.

    Args:
        size: input resolution.
        batch: batch size.
        rounds: measurement rounds; the median time per step is reported.
        warmup: untimed steps per candidate and mode (tracing, XLA compile).
        steps: timed steps per round.
        slow_steps: timed steps per round for the XLA grouped-conv candidate
            in training, which is tens of times slower.
        modes: ``"train"`` and/or ``"infer"``.
        models: further registered model names to measure.
        keras_grouped: also measure Keras' own grouped Conv2D (slow: minutes).
        log: progress printer.

    Returns:
        A dict with the machine, the settings and per-candidate results.
    """
    if size < 32 or batch < 1 or rounds < 1 or steps < 1:
        raise ValueError(
            "Need size >= 32, batch >= 1, rounds >= 1, steps >= 1. Received: "
            f"size={size}, batch={batch}, rounds={rounds}, steps={steps}")
    unknown = set(modes) - {"train", "infer"}
    if unknown:
        raise ValueError(f"`modes` must be 'train' and/or 'infer'. Received: {sorted(unknown)}")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 1000, batch))
    models = candidates(size, models=models, keras_grouped=keras_grouped)
    fns = {}
    for label, model in models.items():
        for mode in modes:
            fn = _train_step_fn(model) if mode == "train" else _infer_fn(model)
            start = time.perf_counter()
            _time(fn, x, y, warmup)
            log(f"warm-up {mode:5s} {label}: {time.perf_counter() - start:.1f}s")
            fns[label, mode] = fn
    times = {key: [] for key in fns}
    for r in range(rounds):
        for (label, mode), fn in fns.items():
            n = slow_steps if mode == "train" and "Conv2D(groups" in label else steps
            times[label, mode].append(_time(fn, x, y, n))
            log(f"round {r + 1}/{rounds} {mode:5s} {label}: "
                f"{batch / times[label, mode][-1]:.2f} img/s")
    results = []
    baseline = "keras.applications.ResNet50"
    for label in models:
        row = {"model": label,
               "params": int(sum(np.prod(w.shape) for w in models[label].trainable_weights))}
        for mode in modes:
            seconds = statistics.median(times[label, mode])
            row[f"{mode}_img_per_s"] = batch / seconds
            row[f"{mode}_vs_resnet50"] = (statistics.median(times[baseline, mode]) / seconds)
        results.append(row)
    xla_label = "ResNeXt-50 32x4d (keras Conv2D(groups=32))"
    speedup = None
    if "train" in modes and xla_label in models:
        speedup = (statistics.median(times[xla_label, "train"])
                   / statistics.median(times["ResNeXt-50 32x4d (GroupConv2D)", "train"]))
    return {"machine": machine_description(),
            "settings": {"size": size, "batch": batch, "rounds": rounds,
                         "warmup": warmup, "steps": steps, "slow_steps": slow_steps,
                         "dtype": "float32", "xla": "off (the Keras grouped Conv2D "
                         "forces it on for its own op)"},
            "results": results,
            "train_speedup_vs_keras_grouped_conv": speedup}


def markdown(report):
    """The benchmark report as a markdown section."""
    m, s = report["machine"], report["settings"]
    modes = [k[:-len("_img_per_s")] for k in report["results"][0] if k.endswith("_img_per_s")]
    head = "| model | params | " + " | ".join(
        f"{mode} img/s | {mode} vs ResNet-50" for mode in modes) + " |"
    lines = [
        f"## oneDNN {'on' if m['onednn_enabled'] else 'off'} "
        f"(TF_ENABLE_ONEDNN_OPTS={m['onednn_setting']})",
        "",
        f"Machine: {m['cpu']} (flags: {' '.join(m['cpu_flags']) or 'no avx2/avx512/amx'}), "
        f"{m['logical_cores']} logical cores, {m['gpus']} GPUs; "
        f"Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}.",
        f"Settings: batch {s['batch']}, {s['size']}x{s['size']} px, {s['dtype']}, "
        f"median of {s['rounds']} interleaved rounds ({s['steps']} steps each, "
        f"{s['slow_steps']} for the XLA candidate's training), XLA {s['xla']}.",
        "",
        head,
        "|" + "---|" * (2 + 2 * len(modes)),
    ]
    for row in report["results"]:
        cells = [row["model"], f"{row['params']:,}"]
        for mode in modes:
            cells += [f"{row[f'{mode}_img_per_s']:.2f}", f"{row[f'{mode}_vs_resnet50']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("train_speedup_vs_keras_grouped_conv"):
        lines += ["", "ResNeXt-50 training step with `GroupConv2D` vs Keras' "
                  f"`Conv2D(groups=32)`: {report['train_speedup_vs_keras_grouped_conv']:.1f}x faster."]
    return "\n".join(lines) + "\n"


INTRO = """# Benchmarks

Written by `TF_ENABLE_ONEDNN_OPTS=0 python applications/benchmark.py --size 224 --batch 16 --out docs`
and the same with `TF_ENABLE_ONEDNN_OPTS=1` (`--help` for the options): one section per oneDNN
state, each one run on the machine it names. What to quote are the ratios against
`keras.applications.ResNet50` (~4.1 GMACs per image, like ResNeXt-50) measured in the same run,
round by round, since these machines are noisy. Targets on a CPU without AVX-512 at TensorFlow's
default (oneDNN off): ResNeXt-50 training at least 0.9x and inference at least 0.85x ResNet-50;
training at least 10x the Keras `Conv2D(groups=32)` version.

Why oneDNN matters, and which grouped-convolution graph runs where: [cpu.md](cpu.md). The
ResNet-50 baseline is keras.applications' model as shipped (Keras BatchNormalization); this
package's own ResNet-50 (same layers as its ResNeXt-50, fused BatchNorm) is listed for the
like-for-like ratio. The `Conv2D(groups=32)` candidate is the same ResNeXt-50 with only its
grouped convolutions swapped for Keras' own (XLA-compiled).

"""


def report_path(out_dir, report):
    """``benchmarks_onednn_{on,off}.json``: one result file per oneDNN state."""
    state = "on" if report["machine"]["onednn_enabled"] else "off"
    return os.path.join(out_dir, f"benchmarks_onednn_{state}.json")


def write(report, out_dir):
    """Writes the run's JSON and rewrites ``benchmarks.md`` from every JSON in ``out_dir``.

    Runs with oneDNN on and off are kept side by side (one JSON each), so that
    ``TF_ENABLE_ONEDNN_OPTS=0 ...`` and ``=1 ...`` together give the full table.
    """
    os.makedirs(out_dir, exist_ok=True)
    files.atomic_write_text(report_path(out_dir, report), json.dumps(report, indent=2))
    reports = []
    for state in ("off", "on"):
        path = os.path.join(out_dir, f"benchmarks_onednn_{state}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                reports.append(json.load(f))
    files.atomic_write_text(os.path.join(out_dir, "benchmarks.md"),
                            INTRO + "\n".join(markdown(r) for r in reports))
