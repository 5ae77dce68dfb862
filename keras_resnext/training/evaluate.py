"""Top-1/top-5 of a model and weights on a dataset split, with the weights' transform.

For published weights (``"imagenet"`` or a tag) the evaluation transform comes
from the weights entry (``PretrainedWeights.eval_transform``):
``test_input_size``, ``test_crop_pct``, ``interpolation``, ``mean``, ``std``, so
that published accuracies can be reproduced where the dataset is present. For a
``.weights.h5`` written by ``fit.py`` the transform comes from the run's
``run.json`` next to it; explicit arguments override both.
"""

import json
import logging
import os
import typing

from keras_resnext import extras
from keras_resnext import families
from keras_resnext import preprocessing
from keras_resnext import weights as weights_lib
from keras_resnext.training import data as data_lib
from keras_resnext.training import models as models_lib
from keras_resnext.training import run_dir
from keras_resnext.training import steps as steps_lib

SPLITS = ("validation", "train")

log = logging.getLogger("keras_resnext.training")


class Resolved(typing.NamedTuple):
    """What ``resolve_transform`` found: the transform and where it came from."""

    transform: preprocessing.EvalTransform
    num_classes: int | None  # None: not known from the weights
    source: str


def resolve_transform(model, weights, *, image_size=None, crop_pct=None,
                      interpolation=None):
    """The evaluation transform of ``weights`` (explicit arguments win).

    Args:
        model: architecture name.
        weights: anything ``keras_resnext.weights.parse`` accepts except None:
            ``"imagenet"``, a tag, ``hf-hub:<repo>``, or a file (a
            ``.weights.h5`` written by ``fit.py`` brings its run's transform).
        image_size: override of the input size.
        crop_pct: override of the center-crop fraction.
        interpolation: override of the resize interpolation.

    Returns:
        A ``Resolved``.

    Raises:
        ValueError: unknown model or tag, a missing weights file, a run of
            another model, or a bad override.
    """
    models_lib.check_known(model)
    parsed = weights_lib.parse(model, weights)
    if parsed.kind == "none":
        raise ValueError("`weights` is required: 'imagenet', a pretrained tag or a "
                         ".weights.h5 path. Received: weights=None")
    spec = families.get_spec(model)
    transform = parsed.eval_transform(default_size=spec.default_size)
    num_classes, source = None, "defaults"
    if parsed.entry is not None:
        num_classes = parsed.entry.num_classes
        source = f"pretrained entry {parsed.entry.name}"
    elif parsed.pretrained:
        source = f"defaults (unregistered hub repository {weights})"
    else:
        run_file = os.path.join(os.path.dirname(os.path.abspath(parsed.path)), run_dir.RUN_FILE)
        if os.path.exists(run_file):
            with open(run_file, encoding="utf-8") as f:
                run = json.load(f)
            if run.get("model") != model:
                raise ValueError(
                    f"{weights!r} was trained as model {run.get('model')!r} "
                    f"({run_file}). Received: model={model!r}")
            transform = transform.replace(size=run["eval_size"],
                                          crop_pct=run["eval_crop_pct"])
            num_classes, source = run["num_classes"], run_file
    transform = transform.replace(size=image_size, crop_pct=crop_pct,
                                  interpolation=interpolation)
    return Resolved(transform, num_classes, source)


def evaluate(model, weights, dataset, *, data_dir=None, split="validation",
             batch_size=64, image_size=None, crop_pct=None, interpolation=None,
             max_steps=None):
    """Top-1/top-5 accuracy of ``model`` with ``weights`` on ``dataset``.

    Args:
        model: architecture name (``list_models()`` or a recipe model).
        weights: ``"imagenet"``, a pretrained tag, or a ``.weights.h5`` path.
        dataset: ``digits``, a tensorflow-datasets name or ``folder:PATH``.
        data_dir: tensorflow-datasets data directory.
        split: ``"validation"`` or ``"train"``.
        batch_size: evaluation batch size.
        image_size: override of the weights' evaluation size.
        crop_pct: override of the weights' center-crop fraction.
        interpolation: override of the weights' interpolation.
        max_steps: evaluate only this many batches (a smoke test).

    Returns:
        Dict: ``top1``, ``top5``, ``loss``, ``examples``, the transform, names,
        ``corrupt_images_skipped`` (undecodable files skipped) and
        ``corrupt_files`` (the first ``data_lib.NAMED_SKIPPED`` of them, also
        named in a warning).

    Raises:
        ValueError: bad arguments, or weights whose classes differ from the dataset's.
        FileNotFoundError: missing weights file or unprepared dataset.
        extras.MissingExtraError: TensorFlow is not installed.
    """
    extras.require("tensorflow", "Evaluation (tf.data)")
    import tensorflow as tf

    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: {batch_size!r}")
    resolved = resolve_transform(model, weights, image_size=image_size,
                                 crop_pct=crop_pct, interpolation=interpolation)
    transform = resolved.transform
    source = data_lib.get_source(dataset, data_dir)
    num_classes = resolved.num_classes or source.num_classes
    if num_classes != source.num_classes:
        raise ValueError(
            f"The weights classify {num_classes} classes, {dataset!r} has "
            f"{source.num_classes}. Received: model={model!r}, weights={weights!r}")
    size = transform.size
    # Built at the evaluation size, then loaded: a pretrained entry may be
    # evaluated at a size other than the architecture's default.
    net = models_lib.build_classifier(model, num_classes=num_classes, image_size=size,
                                      weights=weights)
    full_steps = data_lib.eval_steps(source, batch_size, 1, 1, split=split)
    steps = min(full_steps, max_steps or full_steps)
    counter = data_lib.CorruptCounter()
    ds = data_lib.eval_dataset(
        source, batch_size=batch_size, transform=transform, steps=steps,
        counter=counter, split=split)

    @tf.function
    def step(images, labels, weights_):
        return steps_lib.metric_sums(labels, net(images, training=False),
                                     top_k=min(5, num_classes), weights=weights_)

    totals = steps_lib.zero_sums()
    for batch in ds:
        for k, value in step(*batch).items():
            totals[k] += float(value)
    skipped = _skipped_files(counter, whole_split=steps == full_steps)
    count = max(totals["count"], 1.0)
    return {
        "model": model, "weights": str(weights), "dataset": dataset,
        "split": source.splits.get(split, split), "examples": int(totals["count"]),
        "top1": totals["top1"] / count, "top5": totals["top5"] / count,
        "loss": totals["loss"] / count,
        "image_size": size, "crop_pct": transform.crop_pct,
        "interpolation": transform.interpolation, "mean": list(transform.mean),
        "std": list(transform.std), "transform_source": resolved.source,
        "corrupt_images_skipped": len(skipped),
        "corrupt_files": skipped[:data_lib.NAMED_SKIPPED],
    }


def _skipped_files(counter, *, whole_split):
    """The files ``counter`` saw dropped, sorted; logs one line naming the first few."""
    if whole_split:
        counter.flush()  # the files dropped after the last decodable one, too
    skipped = counter.files()
    if skipped:
        log.warning("%s", data_lib.describe_skipped(skipped))
    return skipped
