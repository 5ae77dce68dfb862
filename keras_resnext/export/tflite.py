"""TFLite: the ``predict_probabilities`` signature converted (four quantizations), run in LiteRT."""

import numpy as np

from keras_resnext.export.config import INPUT_IMAGES
from keras_resnext.export.config import SIGNATURE_PROBABILITIES
from keras_resnext.export.config import TFLITE_QUANTIZATIONS


def convert_tflite(saved_model_dir, quantization, *, representative_images=None):
    """Converts the ``predict_probabilities`` signature to a TFLite flatbuffer.

    Args:
        saved_model_dir: a SavedModel written by ``write_conversion_source``.
        quantization: ``"float32"``, ``"float16"`` (float16 weights),
            ``"dynamic"`` (int8 weights, float activations) or ``"int8"``
            (full integer: int8 weights and activations, float32 input/output).
        representative_images: float32 ``(N, S, S, 3)`` 0-255 images; required
            for ``"int8"``.

    Returns:
        The model as bytes.
    """
    import tensorflow as tf

    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(
            f"Unknown TFLite quantization {quantization!r}. Accepted: {TFLITE_QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE_PROBABILITIES])
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("Full-integer int8 needs representative (calibration) images.")
        data = np.asarray(representative_images, "float32")
        converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def tflite_runner(model_content, *, num_threads=None):
    """A callable ``images -> probabilities`` running a TFLite model in LiteRT.

    The callable checks the shape first: LiteRT's signature runner resizes its
    input to whatever it is given and returns numbers for a rank-5, a
    one-channel or a larger batch (docs/deploy.md, "Bad input"). An empty
    batch gives ``[0, classes]``.

    Args:
        model_content: the model as bytes.
        num_threads: LiteRT's threads (None: its default).

    Raises:
        ValueError: (from the callable) ``images`` is not ``[N, S, S, 3]``.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE_PROBABILITIES)
    expected = tuple(runner.get_input_details()[INPUT_IMAGES]["shape_signature"][1:])
    classes = int(runner.get_output_details()["probabilities"]["shape_signature"][-1])

    def run(images):
        images = np.asarray(images, "float32")
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"The TFLite model expects `{INPUT_IMAGES}`: float32 [N, "
                f"{', '.join(map(str, expected))}]. Received shape: {images.shape}")
        if len(images) == 0:
            return np.zeros((0, classes), "float32")
        return np.concatenate([runner(images=images[i:i + 1])["probabilities"]
                               for i in range(len(images))])

    run.interpreter = interpreter
    return run


def tflite_op_names(model_content):
    """Sorted builtin op names of a TFLite model (after delegation)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})
