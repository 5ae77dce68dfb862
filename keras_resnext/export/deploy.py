"""Deployment benchmark: every artifact of one export, in its runtime, on this CPU.

Reads ``export_report.json`` of an export directory and times each artifact it
lists, at each batch size, with every runtime in one process, interleaved
round by round in a shuffled order so that machine noise hits them alike:
the SavedModel in TensorFlow, the ONNX file in ONNX Runtime, the OpenVINO IR
(float32, and bfloat16 where the CPU has it), and every LiteRT variant.
LiteRT files take one image per call (their signature's batch is 1), so a
batch of N is N calls. What ``applications/deploy_benchmark.py`` runs; numbers
need a quiet machine.
"""

import json
import os
import random
import statistics
import time

import numpy as np

from keras_resnext import extras
from keras_resnext.export.config import SIGNATURE_PROBABILITIES
from keras_resnext.export.onnx import onnx_runner
from keras_resnext.export.openvino import openvino_runner
from keras_resnext.export.report import REPORT_JSON
from keras_resnext.export.tflite import tflite_runner


def runners(export_dir, *, threads=None):
    """``{label: images -> probabilities}`` for every artifact of an export.

    Args:
        export_dir: an export's output directory (holding ``export_report.json``).
        threads: threads for ONNX Runtime and LiteRT (None: their defaults).

    Raises:
        FileNotFoundError: no ``export_report.json`` in ``export_dir``.
    """
    path = os.path.join(export_dir, REPORT_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No {REPORT_JSON} in {export_dir!r}: run applications/export.py into it first.")
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    out = {}
    for row in report["artifacts"]:
        if row["path"] is None:
            continue
        artifact = os.path.join(export_dir, row["path"])
        out.update(_artifact_runners(row["format"], artifact, threads))
    return out


def _artifact_runners(fmt, path, threads):
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        signature = loaded.signatures[SIGNATURE_PROBABILITIES]

        def run(images):
            return signature(images=tf.constant(images))["probabilities"].numpy()

        run.loaded = loaded
        return {"SavedModel (TensorFlow)": run}
    if fmt.startswith("tflite_"):
        with open(path, "rb") as f:
            content = f.read()
        return {f"LiteRT {fmt[len('tflite_'):]}": tflite_runner(content, num_threads=threads)}
    if fmt == "onnx":
        return {"ONNX Runtime": onnx_runner(path, threads=threads)}
    if fmt == "openvino":
        import openvino as ov

        out = {"OpenVINO f32": openvino_runner(path)}
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            out["OpenVINO bf16"] = openvino_runner(path, precision="bf16")
        return out
    return {}


def require_timm():
    """Raises ``extras.MissingExtraError`` unless timm (and PyTorch) import."""
    try:
        import timm  # noqa: F401  (it imports PyTorch and torchvision)
    except ImportError as e:
        raise extras.MissingExtraError(
            f"--timm needs timm and PyTorch (pip install timm torch torchvision): {e}") from e


def timm_runner(name, transform, *, weights=None, threads=None):
    """A callable running timm's model eagerly in PyTorch: the reference deployment.

    It does the artifacts' work (their ``predict_probabilities``): eval-transformed
    0-255 NHWC images, normalised with the transform's mean/std, the model, softmax.

    Args:
        name: a timm architecture (``timm.create_model``), e.g. ``"resnext50_32x4d"``.
        transform: the export's ``EvalTransform``.
        weights: a PyTorch-layout ``.safetensors`` file (None: timm's random init).
        threads: ``torch.set_num_threads`` (None: PyTorch's default).

    Raises:
        extras.MissingExtraError: timm or PyTorch cannot be imported.
    """
    require_timm()
    import timm
    import torch

    from keras_resnext import convert

    model = timm.create_model(name, pretrained=False).eval()
    if weights is not None:
        state = {k: torch.from_numpy(v) for k, v in convert.read_safetensors(weights).items()}
        model.load_state_dict(state)
    if threads is not None:
        torch.set_num_threads(threads)
    mean = 255.0 * torch.tensor(transform.mean).view(1, 3, 1, 1)
    std = 255.0 * torch.tensor(transform.std).view(1, 3, 1, 1)

    def run(images):
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(images, "float32")).permute(0, 3, 1, 2)
            return model((x - mean) / std).softmax(-1).numpy()

    run.model = model
    return run


def keras_runners(name, transform, *, weights=None):
    """In-process Keras runners of a registered model: what a TensorFlow user calls.

    The same work as the artifacts (``config.probabilities_fn``: normalisation,
    the model, softmax), through the entry points a user has: a ``tf.function``
    of the model as built and of its BatchNorm-folded copy
    (``keras_resnext.fold_batch_norm``), and the folded copy's
    ``predict_on_batch`` and ``predict`` (which build a dataset per call).

    Args:
        name: a registered model name (``keras_resnext.list_models()``).
        transform: the export's ``EvalTransform`` (its size is the model's).
        weights: a weights file for ``keras_resnext.create_model`` (None: random).

    Returns:
        ``{label: images -> probabilities}``.
    """
    import tensorflow as tf

    from keras_resnext import folding
    from keras_resnext import model as model_lib
    from keras_resnext.classifier import outputs_probabilities
    from keras_resnext.export.config import probabilities_fn

    model = model_lib.create_model(name, weights=weights,
                                   input_shape=(transform.size, transform.size, 3))
    folded = folding.fold_batch_norm(model)
    out = {}
    for label, m in ((f"Keras {name}: tf.function", model),
                     (f"Keras {name}, folded: tf.function", folded)):
        fn = tf.function(probabilities_fn(m, transform))
        out[label] = lambda images, fn=fn: fn(tf.constant(images)).numpy()
    softmax = not outputs_probabilities(folded)

    def finish(out):
        return tf.nn.softmax(out, axis=-1).numpy() if softmax else np.asarray(out)

    out[f"Keras {name}, folded: predict_on_batch"] = (
        lambda images: finish(folded.predict_on_batch(np.asarray(transform.normalize(images)))))
    out[f"Keras {name}, folded: predict"] = lambda images: finish(folded.predict(
        np.asarray(transform.normalize(images)), batch_size=len(images), verbose=0))
    return out


def benchmark(runs, images, *, batches=(1, 16), rounds=5, min_images=16, seed=0):
    """Images per second of each runner at each batch size (median over rounds).

    Args:
        runs: ``{label: images -> probabilities}``.
        images: float32 ``(N, S, S, 3)`` 0-255 images, N >= the largest batch.
        batches: batch sizes.
        rounds: interleaved rounds.
        min_images: images per timed call group (small batches are repeated).
        seed: order shuffle seed.

    Returns:
        ``{"results": [{runtime, batch, images_per_s, ms_per_image, rounds}],
        "max_abs_diff": {label: vs the first runner, batch 1}}``.
    """
    reference = None
    diffs = {}
    for label, run in runs.items():  # warm-up, and a check that they agree
        for batch in batches:
            run(images[:batch])
        out = np.asarray(run(images[:max(batches)]), "float32")
        reference = out if reference is None else reference
        diffs[label] = float(np.max(np.abs(out - reference)))
    times = {(label, batch): [] for label in runs for batch in batches}
    order = list(runs)
    shuffle = random.Random(seed)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for batch in batches:
            calls = max(1, min_images // batch)
            for label in order:
                start = time.perf_counter()
                for _ in range(calls):
                    runs[label](images[:batch])
                times[(label, batch)].append(batch * calls / (time.perf_counter() - start))
    results = [{"runtime": label, "batch": batch,
                "images_per_s": round(statistics.median(v), 2),
                "ms_per_image": round(1000 / statistics.median(v), 2), "rounds": v}
               for (label, batch), v in times.items()]
    return {"results": results, "max_abs_diff": diffs}


def markdown(result, batches):
    """Images per second, one row per runtime, one column per batch size."""
    by = {(r["runtime"], r["batch"]): r["images_per_s"] for r in result["results"]}
    labels = list(dict.fromkeys(r["runtime"] for r in result["results"]))
    lines = ["| runtime | " + " | ".join(f"batch {b} img/s" for b in batches)
             + " | max abs diff |", "|---" * (len(batches) + 2) + "|"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{by[(label, b)]:.2f}" for b in batches)
                     + f" | {result['max_abs_diff'][label]:.1e} |")
    return "\n".join(lines) + "\n"
