"""The full export: every requested format, verified, with a report.

``export`` takes a built Keras model and arrays of images, makes the
``ExportRequest`` (checked once, when made) and hands both to
``export_request``; ``export_by_name`` (what ``applications/export.py`` runs)
checks the request and the image sources (``ImageSource``) first, then builds
a registered model and loads the images from a folder or a tfds split.
"""

import json
import os
import time

import numpy as np

from keras_resnext import families
from keras_resnext.export.config import DEFAULT_FORMATS
from keras_resnext.export.config import DEFAULT_TFLITE_QUANTIZATIONS
from keras_resnext.export.config import DEFAULT_TOP_K
from keras_resnext.export.config import FOLDED_FORMATS
from keras_resnext.export.config import MIN_INPUT_SIZE
from keras_resnext.export.config import ONNX_MIN_OPSET
from keras_resnext.export.config import check_model
from keras_resnext.export.config import keras_hub_path
from keras_resnext.export.config import openvino_paths
from keras_resnext.export.config import tflite_path
from keras_resnext.export.images import ImageSource
from keras_resnext.export.images import load_sources
from keras_resnext.export.keras_hub import preset_runner
from keras_resnext.export.keras_hub import write_preset
from keras_resnext.export.onnx import convert_onnx
from keras_resnext.export.onnx import onnx_grouped_convs
from keras_resnext.export.onnx import onnx_runner
from keras_resnext.export.openvino import VERIFY_PRECISION
from keras_resnext.export.openvino import convert_openvino
from keras_resnext.export.openvino import openvino_grouped_convs
from keras_resnext.export.openvino import openvino_runner
from keras_resnext.export.report import AGREEMENT_TARGET
from keras_resnext.export.report import NOISE_FLOOR_FACTOR
from keras_resnext.export.report import REPORT_JSON
from keras_resnext.export.report import REPORT_MD
from keras_resnext.export.report import TOLERANCES
from keras_resnext.export.report import keras_graph_fn
from keras_resnext.export.report import keras_probabilities
from keras_resnext.export.report import median_latency_ms
from keras_resnext.export.report import artifact_row
from keras_resnext.export.report import versions
from keras_resnext.export.report import report_markdown
from keras_resnext.export.request import ExportRequest
from keras_resnext.export.saved_model import verify_saved_model
from keras_resnext.export.saved_model import write_conversion_source
from keras_resnext.export.saved_model import write_saved_model
from keras_resnext.export.saved_model import float32_model
from keras_resnext.export.saved_model import folding_fields
from keras_resnext.export.saved_model import serving_model
from keras_resnext.export.saved_model import write_models_config
from keras_resnext.export.staging import atomic_write_text
from keras_resnext.export.staging import staged
from keras_resnext.export.tflite import convert_tflite
from keras_resnext.export.tflite import tflite_op_names
from keras_resnext.export.tflite import tflite_runner


def export(model, out_dir, *, model_name, version=1, formats=DEFAULT_FORMATS,
           tflite_quantizations=DEFAULT_TFLITE_QUANTIZATIONS, weights_entry=None,
           class_names=None, top_k=DEFAULT_TOP_K, calibration_images=None,
           validation_images=None, data_sources=None, overwrite=False,
           onnx_opset=ONNX_MIN_OPSET, latency_runs=20, verify_in_subprocess=True,
           fold_batch_norm=True):
    """Exports ``model`` to every requested format, verifies each, writes a report.

    TFLite, ONNX and OpenVINO are converted from a SavedModel written to the
    staging directory (``write_conversion_source``), never kept. That one and
    the served SavedModel are written from a copy with BatchNorm folded into
    the convolutions (``serving_model``); every artifact is checked against
    ``model`` itself.

    Args:
        model: a Keras classifier with a static square input.
        out_dir: output directory.
        model_name: TF Serving model name and artifact file prefix.
        version: positive integer version.
        formats: subset of ``FORMATS`` (``"keras_hub"``: a keras-hub preset
            folder, for a model built by this package; needs the [hub] extra).
        tflite_quantizations: subset of ``TFLITE_QUANTIZATIONS``.
        weights_entry: ``PretrainedWeights`` or None (see ``eval_transform_for``).
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
        fold_batch_norm: fold BatchNorm for the SavedModel and the converted
            formats (the keras_hub preset keeps it); False: export ``model``
            as it is. The report's ``batch_norm_folded`` and
            ``folded_batch_norms`` say what was done (a model that cannot be
            folded is exported unfolded, and ``batch_norm_not_folded_because``
            says why).

    Returns:
        The report dict (also written to ``<out>/export_report.json`` and
        ``.md``). Each artifact row has ``max_abs_diff``, ``top1_agreement``,
        ``tolerance``/``ok`` for float variants, ``meets_target`` for
        quantized ones, ``size_bytes`` and ``latency_ms_batch1``.

    Raises:
        ValueError: bad arguments, before any work.
        FileExistsError: without ``overwrite``, another export published an
            artifact of this version while this one ran (this one publishes
            nothing).
    """
    request = ExportRequest(
        out_dir, model_name=model_name, version=version, formats=formats,
        tflite_quantizations=tflite_quantizations, overwrite=overwrite,
        onnx_opset=onnx_opset, class_names=class_names, top_k=top_k,
        latency_runs=latency_runs, verify_in_subprocess=verify_in_subprocess,
        fold_batch_norm=fold_batch_norm)
    return export_request(model, request, weights_entry=weights_entry,
                          calibration_images=calibration_images,
                          validation_images=validation_images, data_sources=data_sources)


def export_request(model, request, *, weights_entry=None, calibration_images=None,
                   validation_images=None, data_sources=None):
    """``export`` of an already checked ``ExportRequest``.

    Args:
        model: a Keras classifier with a static square input.
        request: the ``ExportRequest`` (what to write, and where).
        weights_entry, calibration_images, validation_images, data_sources:
            as in ``export``.

    Returns:
        The report dict (see ``export``).

    Raises:
        ValueError: a model or images that cannot be exported, before any work.
        FileExistsError: see ``export``.
    """
    transform, class_names, top_k = check_model(model, weights_entry, request.class_names,
                                                request.top_k)
    spec = families.spec_of(model) if "keras_hub" in request.formats else None
    _check_images(request, transform, calibration_images, validation_images)
    compute_dtypes = sorted({layer.dtype_policy.compute_dtype for layer in model.layers
                             if getattr(layer, "dtype_policy", None) is not None})
    model = float32_model(model)
    served, folding = _served_model(model, request)
    sources = dict(data_sources or {})
    sources.setdefault("validation", "uniform noise, seed 0" if validation_images is None
                       else "validation_images argument")
    if validation_images is None:
        validation_images = np.random.default_rng(0).uniform(
            0, 255, (8, transform.size, transform.size, 3)).astype("float32")
    validation_images = np.asarray(validation_images, "float32")
    check = _Verifier(model, transform, validation_images, request.latency_runs)
    out_dir = request.out_dir
    rows = check.keras_rows()
    with staged(out_dir, overwrite=request.overwrite) as staging:
        rows += _write_artifacts(
            model, served, request, staging, check, spec=spec, class_names=class_names,
            top_k=top_k, calibration_images=calibration_images)
        for entry in rows:
            if entry["path"] is not None:
                entry["path"] = os.path.relpath(staging.destination(entry["path"]), out_dir)
        report = {
            "model_name": request.model_name,
            "version": request.version,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "eval_transform": transform.to_dict(),
            "weights": None if weights_entry is None else weights_entry.name,
            "num_classes": len(class_names),
            # Of the model passed in; the artifacts always compute in float32.
            "model_compute_dtypes": compute_dtypes,
            **folding,
            "validation_images": len(validation_images),
            # Mean top-1 probability of the Keras model: near 1/classes means
            # flat outputs, on which top-1 agreement says little.
            "reference_mean_top1_probability": float(check.reference.max(-1).mean()),
            "calibration_images": 0 if calibration_images is None else len(calibration_images),
            "data_sources": sources,
            "keras_eager_vs_graph_max_abs_diff": check.noise_floor,
            "spec_tolerances": TOLERANCES,
            "tolerances": check.tolerances,
            "agreement_target": AGREEMENT_TARGET,
            "artifacts": rows,
            "versions": versions(),
        }
    if "saved_model" in request.formats:
        write_models_config(out_dir)
    atomic_write_text(os.path.join(out_dir, REPORT_JSON), json.dumps(report, indent=1))
    atomic_write_text(os.path.join(out_dir, REPORT_MD), report_markdown(report))
    return report


def _served_model(model, request):
    """The model the SavedModel and converted formats are written from; the folding fields."""
    if not set(request.formats) & set(FOLDED_FORMATS):
        return model, folding_fields(0, "only a keras_hub preset (it keeps BatchNorm)")
    return serving_model(model, request.fold_batch_norm)


def _check_images(request, transform, calibration_images, validation_images):
    """Raises ``ValueError`` on image arrays the export cannot use."""
    expected_shape = (transform.size, transform.size, 3)
    for label, data in (("calibration_images", calibration_images),
                        ("validation_images", validation_images)):
        if data is not None and (np.ndim(data) != 4 or np.shape(data)[1:] != expected_shape
                                 or len(data) == 0):
            raise ValueError(
                f"`{label}` must be a non-empty (N, {transform.size}, {transform.size}, 3) "
                f"array. Received shape: {np.shape(data)}")
    if "int8" in request.tflite_quantizations and calibration_images is None:
        raise ValueError(
            "TFLite 'int8' (full integer) needs calibration images: pass "
            "calibration_images (CLI: --calibration-images DIR or --calibration-tfds).")


class _Verifier:
    """The reference probabilities of the Keras model and one report row per artifact.

    Float tolerances are never tighter than ``NOISE_FLOOR_FACTOR`` times the
    Keras model's own eager-vs-graph difference.
    """

    def __init__(self, model, transform, images, latency_runs):
        self.transform, self.images, self.latency_runs = transform, images, latency_runs
        self.eager = lambda x: keras_probabilities(model, x, transform)
        self.graph = keras_graph_fn(model, transform)
        self.reference = self.eager(images)
        self.graph_probs = self.graph(images)
        self.noise_floor = float(np.max(np.abs(self.graph_probs - self.reference)))
        self.tolerances = {fmt: max(tol, NOISE_FLOOR_FACTOR * self.noise_floor)
                           for fmt, tol in TOLERANCES.items()}

    def row(self, fmt, path, probs, latency_ms):
        """The report row of ``probs`` (of the validation images) against the reference."""
        return artifact_row(fmt, path, probs, self.reference, latency_ms,
                            self.tolerances.get(fmt))

    def run_row(self, fmt, path, run):
        """The row of a runner ``images -> probabilities``, with its batch-1 latency."""
        return self.row(fmt, path, run(self.images), self.latency(run))

    def latency(self, run):
        return median_latency_ms(run, self.images, self.latency_runs)

    def keras_rows(self):
        return [self.row("keras_eager", None, self.reference, self.latency(self.eager)),
                self.row("keras_graph", None, self.graph_probs, self.latency(self.graph))]


def _write_artifacts(model, served, request, staging, check, *, spec, class_names, top_k,
                     calibration_images):
    """Writes every requested artifact into ``staging``, verified; their rows.

    The SavedModel and the conversion source are written from ``served``
    (BatchNorm folded), the keras_hub preset from ``model``.
    """
    out_dir, model_name, version = request.out_dir, request.model_name, request.version
    rows = []
    if "saved_model" in request.formats:
        sm_dir = os.path.join(staging.root, "saved_model")
        write_saved_model(served, sm_dir, model_name=model_name, transform=check.transform,
                          class_names=class_names, top_k=top_k)
        rows.append(verify_saved_model(sm_dir, check.images, check.row, check.latency_runs,
                                       request.verify_in_subprocess))
        staging.add(sm_dir, os.path.join(out_dir, model_name, str(version)))
    conversion_dir = os.path.join(staging.root, "conversion_source")
    if set(request.formats) & {"tflite", "onnx", "openvino"}:
        write_conversion_source(served, conversion_dir, transform=check.transform)
    for quantization in request.tflite_quantizations:
        rows.append(_tflite_row(conversion_dir, staging, check, quantization,
                                calibration_images))
        staging.add(rows[-1]["path"], tflite_path(out_dir, model_name, version, quantization))
    if "onnx" in request.formats:
        rows.append(_onnx_row(conversion_dir, staging, check, request.onnx_opset))
        staging.add(rows[-1]["path"], os.path.join(out_dir, f"{model_name}-{version}.onnx"))
    if "openvino" in request.formats:
        rows.append(_openvino_row(conversion_dir, staging, check))
        for src, dst in zip(rows[-1].pop("files"),
                            openvino_paths(out_dir, model_name, version)):
            staging.add(src, dst)
    if "keras_hub" in request.formats:
        rows.append(_keras_hub_row(model, staging, check, spec))
        staging.add(rows[-1]["path"], keras_hub_path(out_dir, model_name, version))
    return rows


def _tflite_row(conversion_dir, staging, check, quantization, calibration_images):
    """Converts one TFLite variant into ``staging`` and verifies it; its row."""
    content = convert_tflite(conversion_dir, quantization,
                             representative_images=calibration_images)
    path = os.path.join(staging.root, f"{quantization}.tflite")
    with open(path, "wb") as f:
        f.write(content)
    out = check.run_row(f"tflite_{quantization}", path, tflite_runner(content))
    out["ops"] = tflite_op_names(content)
    return out


def _onnx_row(conversion_dir, staging, check, opset):
    """Converts to ONNX into ``staging`` and verifies it; its row."""
    path = os.path.join(staging.root, "model.onnx")
    proto = convert_onnx(conversion_dir, path, opset=opset)
    out = check.run_row("onnx", path, onnx_runner(path))
    groups = onnx_grouped_convs(proto)
    out.update(
        opset=opset, grouped_conv_nodes=len(groups),
        grouped_conv_groups=sorted(set(groups)),
        dynamic_batch=not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField(
            "dim_value"))
    return out


def _openvino_row(conversion_dir, staging, check):
    """Converts to an OpenVINO IR in ``staging`` and verifies it; its row.

    The row's ``files`` are the staged ``.xml`` and ``.bin``; its size is both.
    """
    xml, weights = openvino_paths(staging.root, "model", "ir")
    groups = openvino_grouped_convs(convert_openvino(conversion_dir, xml))
    out = check.run_row("openvino", xml, openvino_runner(xml))
    out.update(size_bytes=os.path.getsize(xml) + os.path.getsize(weights),
               precision=VERIFY_PRECISION, grouped_conv_nodes=len(groups),
               grouped_conv_groups=sorted(set(groups)), files=[xml, weights])
    return out


def _keras_hub_row(model, staging, check, spec):
    """Writes the keras-hub preset into ``staging`` and verifies it; its row."""
    path = os.path.join(staging.root, "keras_hub")
    write_preset(model, path, spec=spec, transform=check.transform)
    run = preset_runner(path, check.transform)
    out = check.run_row("keras_hub", path, run)
    out["preprocessor_matches"] = run.transform_matches
    out["ok"] = out["ok"] and run.transform_matches
    return out


def weights_entry_for(arch, weights=None, preprocessing_tag=None):
    """The ``PretrainedWeights`` whose preprocessing an export bakes in, or None.

    Args:
        arch: registered architecture name, or None for a custom ``Spec``.
        weights: the ``weights=`` argument or its parsed ``Weights`` (a tag,
            ``"imagenet"`` or a registered ``hf-hub:`` repository selects its
            entry; files select none).
        preprocessing_tag: a tag (or ``"imagenet"``) that overrides ``weights``.

    Raises:
        ValueError: ``preprocessing_tag`` without a registered ``arch``, or
            an unknown tag.
    """
    from keras_resnext import pretrained
    from keras_resnext import weights as weights_lib

    if preprocessing_tag is not None:
        if arch is None:
            raise ValueError(
                "`preprocessing_tag` needs a registered architecture (--model). "
                f"Received: preprocessing_tag={preprocessing_tag!r} with a custom spec")
        return pretrained.get_pretrained(arch, preprocessing_tag)
    if arch is None:
        return None
    return weights_lib.parse(arch, weights).entry


def export_by_name(arch=None, *, spec=None, weights=None, input_size=None,
                   classes=1000, out_dir, model_name=None, formats=DEFAULT_FORMATS,
                   tflite_quantizations=DEFAULT_TFLITE_QUANTIZATIONS,
                   calibration_dir=None, calibration_tfds=None, num_calibration=100,
                   validation_dir=None, validation_tfds=None, num_validation=200,
                   tfds_data_dir=None, version=1, overwrite=False, preprocessing_tag=None,
                   class_names=None, top_k=DEFAULT_TOP_K, onnx_opset=ONNX_MIN_OPSET,
                   latency_runs=20, verify_in_subprocess=True, fold_batch_norm=True):
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
        class_names, top_k, onnx_opset, latency_runs, verify_in_subprocess,
        fold_batch_norm: as in ``export``.

    Returns:
        The report dict.
    """
    from keras_resnext import families

    if (arch is None) == (spec is None):
        raise ValueError("Pass exactly one of `arch` (a registered name) and `spec`. "
                         f"Received: arch={arch!r}, spec={spec!r}")
    if arch is not None:
        spec = families.get_spec(arch)
    request = ExportRequest(
        out_dir, model_name=model_name or arch, version=version, formats=formats,
        tflite_quantizations=tflite_quantizations, overwrite=overwrite,
        onnx_opset=onnx_opset, class_names=class_names, top_k=top_k,
        latency_runs=latency_runs, verify_in_subprocess=verify_in_subprocess,
        fold_batch_norm=fold_batch_norm)
    calibration = ImageSource("calibration", calibration_dir, calibration_tfds,
                              num_calibration, tfds_data_dir)
    validation = ImageSource("validation", validation_dir, validation_tfds,
                             num_validation, tfds_data_dir)
    if "int8" in request.tflite_quantizations and not calibration.given:
        raise ValueError(
            "TFLite 'int8' (full integer) needs calibration images: give a folder "
            "(--calibration-images) or a tfds split (--calibration-tfds).")
    return _export_built(request, arch, spec, weights=weights, input_size=input_size,
                         classes=classes, preprocessing_tag=preprocessing_tag,
                         sources=(calibration, validation))


def _export_built(request, arch, spec, *, weights, input_size, classes, preprocessing_tag,
                  sources):
    """``export_by_name`` after its checks: weights, images, the model, the export."""
    from keras_resnext import model as model_lib
    from keras_resnext import pretrained
    from keras_resnext import weights as weights_lib

    parsed = weights_lib.parse(arch or request.model_name, weights)
    entry = weights_entry_for(arch, parsed, preprocessing_tag)
    size = input_size or (entry.test_input_size if entry else spec.default_size)
    if not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise ValueError(
            f"Input size too small to export; the smallest accepted is {MIN_INPUT_SIZE}. "
            f"Received: input_size={size!r}")
    transform = pretrained.eval_transform(entry, size)
    calibration, validation, data_sources = load_sources(*sources, transform)
    model = model_lib.build(arch or spec, weights=parsed, input_shape=(size, size, 3),
                            classes=classes, name=request.model_name)
    return export_request(model, request, weights_entry=entry,
                          calibration_images=calibration, validation_images=validation,
                          data_sources=data_sources)
