"""What an export is asked to write: one request, checked once, when made."""

import dataclasses
import os

from keras_resnext import extras
from keras_resnext import files
from keras_resnext.export.config import DEFAULT_FORMATS
from keras_resnext.export.config import DEFAULT_TFLITE_QUANTIZATIONS
from keras_resnext.export.config import DEFAULT_TOP_K
from keras_resnext.export.config import FORMATS
from keras_resnext.export.config import ONNX_MIN_OPSET
from keras_resnext.export.config import TFLITE_QUANTIZATIONS
from keras_resnext.export.config import artifact_paths
from keras_resnext.export.config import check_top_k


def as_names(value):
    """A format/quantization list; one bare string counts as one name."""
    return (value,) if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """An export request, checked when made, before any work, cheaply.

    The checks look at paths only, and open a nameless temporary file in
    ``out_dir`` (or its nearest existing parent) to check that it is writable.
    ``formats`` and ``tflite_quantizations`` are stored as tuples (one bare
    string is one name); the quantizations are dropped without ``"tflite"``.

    Attributes:
        out_dir: output directory (created if missing; must not be a file).
        model_name: TF Serving model name (a single path component).
        version: positive integer version.
        formats: subset of ``FORMATS``.
        tflite_quantizations: subset of ``TFLITE_QUANTIZATIONS``.
        overwrite: allow replacing an existing version.
        onnx_opset: ONNX opset (>= ``ONNX_MIN_OPSET``).
        class_names: names of the ``top_k_class_names`` output, or None
            (see ``resolve_class_names``).
        top_k: number of top classes of the serving signatures.
        latency_runs: batch-1 runs timed per artifact (median reported).
        verify_in_subprocess: load the SavedModel in a fresh process for the
            check (else in this process).
        fold_batch_norm: write the SavedModel and the converted formats from
            a copy with BatchNorm folded into the convolutions
            (``keras_resnext.fold_batch_norm``; faster in TF Serving); False
            writes them from the model as it is.

    Raises:
        ValueError: on any bad value; the message says what was received and
            what is accepted.
        PermissionError: ``out_dir`` cannot be written (``files.check_writable_dir``).
        extras.MissingExtraError: the [export] extra (or, for ``"keras_hub"``,
            the [hub] extra) is not installed.
    """

    out_dir: str
    model_name: str
    version: int = 1
    formats: tuple = DEFAULT_FORMATS
    tflite_quantizations: tuple = DEFAULT_TFLITE_QUANTIZATIONS
    overwrite: bool = False
    onnx_opset: int = ONNX_MIN_OPSET
    class_names: tuple = None
    top_k: int = DEFAULT_TOP_K
    latency_runs: int = 20
    verify_in_subprocess: bool = True
    fold_batch_norm: bool = True

    def __post_init__(self):
        formats = as_names(self.formats)
        quantizations = as_names(self.tflite_quantizations) if "tflite" in formats else ()
        # Frozen: the normalised values are set once, here.
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "tflite_quantizations", quantizations)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        self.validate()

    @property
    def paths(self):
        """Final paths of the artifacts, in report order."""
        return artifact_paths(self.out_dir, self.model_name, self.version, self.formats,
                              self.tflite_quantizations)

    def validate(self):
        """Raises on a bad value (see the class); run by the constructor."""
        extras.require("export", "Export")
        if "keras_hub" in self.formats:
            extras.require("hub", "Export format 'keras_hub'")
        self._check_names()
        self._check_values()
        self._check_paths()

    def _check_names(self):
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(
                f"Unknown export format(s) {bad or self.formats!r}. Accepted: {FORMATS}")
        bad = [q for q in self.tflite_quantizations if q not in TFLITE_QUANTIZATIONS]
        if bad:
            raise ValueError(
                f"Unknown TFLite quantization(s) {bad!r}. Accepted: {TFLITE_QUANTIZATIONS}")
        if "tflite" in self.formats and not self.tflite_quantizations:
            raise ValueError(
                "Format 'tflite' needs at least one quantization. Accepted: "
                f"{TFLITE_QUANTIZATIONS}")
        name = self.model_name
        if (not isinstance(name, str) or not name or
                name.startswith(".") or os.sep in name or "/" in name):
            raise ValueError(
                "`model_name` must be a non-empty file name without '/' that does not "
                f"start with '.'. Received: model_name={name!r}")

    def _check_values(self):
        version = self.version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(
                "`version` must be a positive integer (TF Serving version directory). "
                f"Received: version={version!r}")
        if not isinstance(self.onnx_opset, int) or self.onnx_opset < ONNX_MIN_OPSET:
            raise ValueError(
                f"`onnx_opset` must be an integer >= {ONNX_MIN_OPSET}. "
                f"Received: onnx_opset={self.onnx_opset!r}")
        check_top_k(self.top_k)
        if not isinstance(self.fold_batch_norm, bool):
            raise ValueError(
                "`fold_batch_norm` must be True or False. "
                f"Received: fold_batch_norm={self.fold_batch_norm!r}")

    def _check_paths(self):
        out_dir = self.out_dir
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ValueError(
                f"The output path is a file, not a directory. Received: out_dir={out_dir!r}")
        files.check_writable_dir(out_dir, name="out_dir")
        base = os.path.join(out_dir, self.model_name)
        if os.path.exists(base) and not os.path.isdir(base):
            raise ValueError(
                f"The model base path {base!r} exists and is a file; TF Serving needs "
                "a directory there.")
        if not self.overwrite:
            existing = [p for p in self.paths if os.path.exists(p)]
            if existing:
                raise ValueError(
                    f"Version {self.version} of {self.model_name!r} already exists "
                    f"({existing[0]}). Pass overwrite=True (--overwrite) to replace it, "
                    "or choose another version.")


def validate_request(out_dir, *, model_name, version=1, formats=("saved_model",),
                     tflite_quantizations=(), overwrite=False, onnx_opset=ONNX_MIN_OPSET,
                     fold_batch_norm=True):
    """Checks an export request before any work; returns the ``ExportRequest``.

    Args and raises: see ``ExportRequest`` (these defaults: a SavedModel only).
    """
    return ExportRequest(out_dir, model_name=model_name, version=version, formats=formats,
                         tflite_quantizations=tflite_quantizations, overwrite=overwrite,
                         onnx_opset=onnx_opset, fold_batch_norm=fold_batch_norm)
