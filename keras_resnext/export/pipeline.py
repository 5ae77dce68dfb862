"""The full export: every requested format, verified, with a report.

``export`` takes a built Keras model and arrays of images; ``export_by_name``
(what ``applications/export.py`` runs) builds a registered model and loads the
images from a folder or a tfds split first.
"""

import json
import os
import time

import numpy as np

from keras_resnext import families
from keras_resnext.export.config import DEFAULT_FORMATS
from keras_resnext.export.config import DEFAULT_TFLITE_QUANTIZATIONS
from keras_resnext.export.config import DEFAULT_TOP_K
from keras_resnext.export.config import MIN_INPUT_SIZE
from keras_resnext.export.config import ONNX_MIN_OPSET
from keras_resnext.export.config import check_model
from keras_resnext.export.config import keras_hub_path
from keras_resnext.export.config import as_names
from keras_resnext.export.config import list_images
from keras_resnext.export.config import load_images
from keras_resnext.export.config import load_tfds_images
from keras_resnext.export.config import openvino_paths
from keras_resnext.export.config import parse_tfds_source
from keras_resnext.export.config import tflite_path
from keras_resnext.export.config import validate_request
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
from keras_resnext.export.saved_model import verify_saved_model
from keras_resnext.export.saved_model import write_conversion_source
from keras_resnext.export.saved_model import write_saved_model
from keras_resnext.export.saved_model import float32_model
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
           onnx_opset=ONNX_MIN_OPSET, latency_runs=20, verify_in_subprocess=True):
    """Exports ``model`` to every requested format, verifies each, writes a report.

    TFLite and ONNX are converted from a SavedModel written to the staging
    directory (``write_conversion_source``), never kept.

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
    formats = as_names(formats)
    quantizations = as_names(tflite_quantizations) if "tflite" in formats else ()
    validate_request(out_dir, model_name=model_name, version=version, formats=formats,
                     tflite_quantizations=quantizations, overwrite=overwrite,
                     onnx_opset=onnx_opset)
    transform, class_names, top_k = check_model(model, weights_entry, class_names, top_k)
    if "keras_hub" in formats:
        families.spec_of(model)  # the preset's backbone config is the spec
    return _export_checked(
        model, os.fspath(out_dir), model_name=model_name, version=version,
        overwrite=overwrite, formats=formats, quantizations=quantizations,
        weights_entry=weights_entry, transform=transform,
        class_names=class_names, top_k=top_k, calibration_images=calibration_images,
        validation_images=validation_images, data_sources=data_sources,
        onnx_opset=onnx_opset, latency_runs=latency_runs,
        verify_in_subprocess=verify_in_subprocess)


def _export_checked(model, out_dir, *, model_name, version, overwrite, formats,
                    quantizations, weights_entry, transform, class_names, top_k,
                    calibration_images, validation_images, data_sources, onnx_opset,
                    latency_runs, verify_in_subprocess):
    """``export`` after its request and model checks (done once, by the caller)."""
    compute_dtypes = sorted({layer.dtype_policy.compute_dtype for layer in model.layers
                             if getattr(layer, "dtype_policy", None) is not None})
    spec = families.spec_of(model) if "keras_hub" in formats else None
    model = float32_model(model)
    expected_shape = (transform.size, transform.size, 3)
    for label, data in (("calibration_images", calibration_images),
                        ("validation_images", validation_images)):
        if data is not None and (np.ndim(data) != 4 or np.shape(data)[1:] != expected_shape
                                 or len(data) == 0):
            raise ValueError(
                f"`{label}` must be a non-empty (N, {transform.size}, {transform.size}, 3) "
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
    reference = keras_probabilities(model, validation_images, transform)

    keras_graph = keras_graph_fn(model, transform)
    graph_probs = keras_graph(validation_images)
    noise_floor = float(np.max(np.abs(graph_probs - reference)))
    tolerances = {fmt: max(tol, NOISE_FLOOR_FACTOR * noise_floor)
                  for fmt, tol in TOLERANCES.items()}

    def row(fmt, path, probs, latency_ms):
        return artifact_row(fmt, path, probs, reference, latency_ms, tolerances.get(fmt))

    rows = [
        row("keras_eager", None, reference, median_latency_ms(
            lambda x: keras_probabilities(model, x, transform), validation_images,
            latency_runs)),
        row("keras_graph", None, graph_probs,
            median_latency_ms(keras_graph, validation_images, latency_runs)),
    ]
    with staged(out_dir, overwrite=overwrite) as staging:
        if "saved_model" in formats:
            sm_dir = os.path.join(staging.root, "saved_model")
            write_saved_model(model, sm_dir, model_name=model_name, transform=transform,
                               class_names=class_names, top_k=top_k)
            rows.append(verify_saved_model(sm_dir, validation_images, row, latency_runs,
                                            verify_in_subprocess))
            staging.add(sm_dir, os.path.join(out_dir, model_name, str(version)))
        conversion_dir = os.path.join(staging.root, "conversion_source")
        if set(formats) & {"tflite", "onnx", "openvino"}:
            write_conversion_source(model, conversion_dir, transform=transform)
        for quantization in quantizations:
            content = convert_tflite(conversion_dir, quantization,
                                     representative_images=calibration_images)
            path = os.path.join(staging.root, f"{quantization}.tflite")
            with open(path, "wb") as f:
                f.write(content)
            run = tflite_runner(content)
            rows.append(row(f"tflite_{quantization}", path, run(validation_images),
                            median_latency_ms(run, validation_images, latency_runs)))
            rows[-1]["ops"] = tflite_op_names(content)
            staging.add(path, tflite_path(out_dir, model_name, version, quantization))
        if "onnx" in formats:
            path = os.path.join(staging.root, "model.onnx")
            proto = convert_onnx(conversion_dir, path, opset=onnx_opset)
            run = onnx_runner(path)
            rows.append(row("onnx", path, run(validation_images),
                            median_latency_ms(run, validation_images, latency_runs)))
            groups = onnx_grouped_convs(proto)
            rows[-1].update(
                opset=onnx_opset, grouped_conv_nodes=len(groups),
                grouped_conv_groups=sorted(set(groups)),
                dynamic_batch=not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField(
                    "dim_value"))
            staging.add(path, os.path.join(out_dir, f"{model_name}-{version}.onnx"))
        if "openvino" in formats:
            rows.append(_openvino_row(conversion_dir, staging, validation_images, row,
                                      latency_runs))
            for src, dst in zip(rows[-1].pop("files"),
                                openvino_paths(out_dir, model_name, version)):
                staging.add(src, dst)
        if "keras_hub" in formats:
            path = os.path.join(staging.root, "keras_hub")
            write_preset(model, path, spec=spec, transform=transform)
            run = preset_runner(path, transform)
            rows.append(row("keras_hub", path, run(validation_images),
                            median_latency_ms(run, validation_images, latency_runs)))
            rows[-1]["preprocessor_matches"] = run.transform_matches
            rows[-1]["ok"] = rows[-1]["ok"] and run.transform_matches
            staging.add(path, keras_hub_path(out_dir, model_name, version))
        for entry in rows:
            if entry["path"] is not None:
                entry["path"] = os.path.relpath(staging.destination(entry["path"]), out_dir)
        report = {
            "model_name": model_name,
            "version": version,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "eval_transform": transform.to_dict(),
            "weights": None if weights_entry is None else weights_entry.name,
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
            "versions": versions(),
        }
    if "saved_model" in formats:
        write_models_config(out_dir)
    atomic_write_text(os.path.join(out_dir, REPORT_JSON), json.dumps(report, indent=1))
    atomic_write_text(os.path.join(out_dir, REPORT_MD), report_markdown(report))
    return report


def _openvino_row(conversion_dir, staging, images, row, latency_runs):
    """Converts to an OpenVINO IR in ``staging`` and verifies it; the report row.

    The row's ``files`` are the staged ``.xml`` and ``.bin``; its size is both.
    """
    xml, weights = openvino_paths(staging.root, "model", "ir")
    groups = openvino_grouped_convs(convert_openvino(conversion_dir, xml))
    run = openvino_runner(xml)
    out = row("openvino", xml, run(images), median_latency_ms(run, images, latency_runs))
    out.update(size_bytes=os.path.getsize(xml) + os.path.getsize(weights),
               precision=VERIFY_PRECISION, grouped_conv_nodes=len(groups),
               grouped_conv_groups=sorted(set(groups)), files=[xml, weights])
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
                   latency_runs=20, verify_in_subprocess=True):
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
        class_names, top_k, onnx_opset, latency_runs, verify_in_subprocess:
            as in ``export``.

    Returns:
        The report dict.
    """
    from keras_resnext import model as model_lib
    from keras_resnext import pretrained
    from keras_resnext import specs as specs_lib
    from keras_resnext import weights as weights_lib

    if (arch is None) == (spec is None):
        raise ValueError("Pass exactly one of `arch` (a registered name) and `spec`. "
                         f"Received: arch={arch!r}, spec={spec!r}")
    if arch is not None:
        spec = specs_lib.get_spec(arch)
    model_name = model_name or arch
    formats = as_names(formats)
    quantizations = as_names(tflite_quantizations) if "tflite" in formats else ()
    validate_request(out_dir, model_name=model_name, version=version, formats=formats,
                     tflite_quantizations=quantizations, overwrite=overwrite,
                     onnx_opset=onnx_opset)
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
    parsed = weights_lib.parse(arch or model_name, weights)
    entry = weights_entry_for(arch, parsed, preprocessing_tag)
    size = input_size or (entry.test_input_size if entry else spec.default_size)
    if not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise ValueError(
            f"Input size too small to export; the smallest accepted is {MIN_INPUT_SIZE}. "
            f"Received: input_size={size!r}")
    transform = pretrained.eval_transform(entry, size)

    def load(directory, tfds_source, limit):
        if directory is not None:
            return load_images(directory, transform, limit=limit), f"folder {directory}"
        if tfds_source is not None:
            name, split = parse_tfds_source(tfds_source)
            return (load_tfds_images(name, split, transform, limit=limit,
                                     data_dir=tfds_data_dir),
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

    model = model_lib.build(arch or spec, weights=parsed, input_shape=(size, size, 3),
                            classes=classes, name=model_name)
    _, class_names, top_k = check_model(model, entry, class_names, top_k)
    return _export_checked(
        model, os.fspath(out_dir), model_name=model_name, version=version,
        overwrite=overwrite, formats=formats, quantizations=quantizations, weights_entry=entry,
        transform=transform, class_names=class_names, top_k=top_k,
        calibration_images=calibration, validation_images=validation,
        data_sources=sources, onnx_opset=onnx_opset, latency_runs=latency_runs,
        verify_in_subprocess=verify_in_subprocess)
