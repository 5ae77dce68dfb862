"""Verification of the artifacts against the Keras model, and the report.

Reference probabilities of the Keras model (eager and as a graph), one row of
numbers per artifact (differences, top-1 agreement, size, batch-1 latency)
and the markdown table of ``export_report.md``.
"""

import os
import statistics
import time

import numpy as np

from keras_resnext.export.config import probabilities_fn

# Max abs difference on probabilities against the Keras model.
TOLERANCES = {
    "saved_model": 1e-5,
    "tflite_float32": 1e-4,
    "tflite_float16": 1e-2,
    "onnx": 1e-4,
    "openvino": 1e-4,
    "keras_hub": 1e-5,
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
REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"


def keras_probabilities(model, images, transform):
    """Probabilities of the Keras model run eagerly (the reference of every row)."""
    images = np.asarray(images, "float32")
    return np.asarray(probabilities_fn(model, transform)(images))


def keras_graph_fn(model, transform):
    """``images -> probabilities`` with the Keras model inside a ``tf.function``."""
    import tensorflow as tf

    probabilities = tf.function(probabilities_fn(model, transform), jit_compile=False)
    return lambda images: probabilities(tf.constant(images, tf.float32)).numpy()


def artifact_row(fmt, path, probs, reference, latency_ms, tolerance=None):
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


def median_latency_ms(fn, images, runs):
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


def versions():
    import importlib.metadata as md

    out = {}
    for package in ("tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert",
                    "openvino", "keras-hub"):
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
        _folding_line(report),
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


def _folding_line(report):
    """What the report says about BatchNorm folding, in words."""
    if report["batch_norm_folded"]:
        return (f"BatchNorm: {report['folded_batch_norms']} folded into their convolutions "
                "in the SavedModel and the converted formats (a keras_hub preset keeps them).")
    return f"BatchNorm: not folded ({report['batch_norm_not_folded_because']})."


def _human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
