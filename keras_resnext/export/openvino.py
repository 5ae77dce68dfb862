"""OpenVINO: the ``predict_probabilities`` signature converted to an IR, run in OpenVINO Runtime.

Converted from the signature of ``write_conversion_source``'s SavedModel (the
source of TFLite and ONNX too; the served one checks its input shape in ways the
converters need not see),
not from the ONNX file: both give the same graph (one ``GroupConvolution`` per
grouped convolution, one layout ``Transpose`` at the input), and this way
``--formats openvino`` does not need tf2onnx.
"""

import numpy as np

from keras_resnext.export.config import SIGNATURE_PROBABILITIES

# OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with AVX512_BF16
# or AMX. Verification runs the IR as it is stored, in float32; deployment may
# choose bfloat16 (docs/deploy.md).
VERIFY_PRECISION = "f32"


def convert_openvino(saved_model_dir, xml_path):
    """Converts ``predict_probabilities`` to an OpenVINO IR (``.xml`` + ``.bin``).

    Args:
        saved_model_dir: a SavedModel written by ``write_conversion_source``.
        xml_path: output ``.xml`` file; the weights go to the ``.bin`` next to it.

    Returns:
        The ``openvino.Model``.
    """
    import openvino as ov
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)  # owns the signature's variables
    model = ov.convert_model(loaded.signatures[SIGNATURE_PROBABILITIES])
    # float32 weights: the artifact is verified as float32 (the default halves
    # them to float16).
    ov.save_model(model, xml_path, compress_to_fp16=False)
    return model


def openvino_runner(xml_path, *, precision=VERIFY_PRECISION, config=None):
    """A callable ``images -> probabilities`` running an IR on OpenVINO's CPU plugin.

    Args:
        xml_path: the IR's ``.xml`` file.
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"`` or ``"bf16"``).
        config: more CPU plugin properties (e.g. ``{"PERFORMANCE_HINT":
            "THROUGHPUT"}``).
    """
    import openvino as ov

    compiled = ov.Core().compile_model(
        xml_path, "CPU", {"INFERENCE_PRECISION_HINT": precision, **(config or {})})

    def run(images):
        return compiled(np.asarray(images, "float32"))[0]

    run.compiled = compiled
    return run


def openvino_grouped_convs(model):
    """Groups of every ``GroupConvolution`` of an ``openvino.Model``."""
    return [int(op.input(1).get_partial_shape()[0].get_length())
            for op in model.get_ordered_ops() if op.get_type_name() == "GroupConvolution"]
