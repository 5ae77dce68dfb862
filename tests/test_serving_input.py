"""Bad requests to every exported artifact: refused cleanly, no process dies (issue 21).

Each runtime runs in a child process, so that a request that aborts the
process (a rank-3 batch did, under oneDNN, with SIGABRT in the convolution
kernel) fails the test with its return code instead of killing pytest. The
SavedModel is called as a loaded signature and as TF Serving calls it: a TF1
``Session`` run on the signature's tensor names. The tensor is fed as a
session handle (``tf.compat.v1.get_session_handle``), which skips the Python
client's own shape check, as TF Serving's C++ ``Session::Run`` does. The
TFLite, ONNX and OpenVINO files get the same requests in their runtimes.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

import keras_resnext
from keras_resnext import export as export_lib

from helpers import TINY_SPEC

SIZE = 32
CLASSES = 10
TOP_K = 3
# Shapes no image signature may run; the expected error names each one.
BAD_SHAPES = {
    "no batch axis": [SIZE, SIZE, 3],
    "rank 5": [1, 1, SIZE, SIZE, 3],
    "rank 5, trailing dims right": [1, SIZE, SIZE, 3, 3],
    "one channel": [1, SIZE, SIZE, 1],
    "larger": [1, 2 * SIZE, 2 * SIZE, 3],
    "smaller": [1, 8, 8, 3],
    "scalar": [],
}
TESTS = os.path.dirname(os.path.abspath(__file__))
# A fresh TensorFlow per child: 20-60 s each on a shared 2-core machine.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    out = tmp_path_factory.mktemp("exports")
    export_lib.export(model, out, model_name="tiny",
                      formats=("saved_model", "tflite", "onnx", "openvino"),
                      tflite_quantizations=("float32",), top_k=TOP_K, latency_runs=1,
                      verify_in_subprocess=False)
    return out


def run_child(code, onednn="0"):
    """Runs ``code`` in a fresh Python; returns its JSON output. No crash allowed."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=600)
    # A signal shows as a negative code (-6: SIGABRT); stderr names the last case.
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


# Shared by the children: call(fn) -> output shapes, or "refused: <message>".
_CALL = """
def call(label, fn, errors):
    print(label, file=sys.stderr, flush=True)
    try:
        out = fn()
    except errors as e:
        return "refused: " + str(e)
    return {k: list(np.shape(v)) for k, v in out.items()}
"""

_TF_CHILD = _CALL + """
import json, sys
import numpy as np
import tensorflow as tf

path, bad_shapes, size = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
jpeg = tf.io.encode_jpeg(tf.zeros([40, 50, 3], tf.uint8)).numpy()
image_cases = {name: np.zeros(shape, "float32") for name, shape in bad_shapes.items()}
image_cases.update({"int32": np.zeros([1, size, size, 3], "int32"),
                    "empty batch": np.zeros([0, size, size, 3], "float32"),
                    "good": np.zeros([2, size, size, 3], "float32")})
bytes_cases = {"rank 2": np.array([[jpeg]], object), "scalar": np.array(jpeg, object),
               "not an image": np.array([b"not an image"], object),
               "empty string": np.array([b""], object),
               "empty batch": np.zeros([0], object), "good": np.array([jpeg], object)}
cases = {"serving_default": ("images", image_cases),
         "predict_probabilities": ("images", image_cases),
         "serve_image_bytes": ("image_bytes", bytes_cases)}
errors = tf.errors.InvalidArgumentError
results = {"signature": {}, "session": {}}

loaded = tf.saved_model.load(path)
for name, (key, inputs) in cases.items():
    sig = loaded.signatures[name]
    results["signature"][name] = {
        case: call(f"signature {name} {case}", lambda: sig(**{key: tf.constant(x)}), errors)
        for case, x in inputs.items()}

with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    for name, (key, inputs) in cases.items():
        sig = meta.signature_def[name]
        fetches = {k: v.name for k, v in sig.outputs.items()}
        results["session"][name] = {}
        for case, x in inputs.items():
            handle = sess.run(tf.compat.v1.get_session_handle(tf.constant(x)))
            results["session"][name][case] = call(
                f"session {name} {case}",
                lambda: sess.run(fetches, {sig.inputs[key].name: handle}), errors)
print(json.dumps(results))
"""


def _shape_text(shape):
    return "[" + ",".join(map(str, shape)) + "]"


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_saved_model_refuses_bad_requests(exported, onednn):
    path = os.path.join(exported, "tiny", "1")
    results = run_child(
        f"import sys; sys.argv[1:] = {[path, json.dumps(BAD_SHAPES), str(SIZE)]!r}\n"
        + _TF_CHILD, onednn)
    expected = _shape_text([None, SIZE, SIZE, 3]).replace("None", "?")
    for how in ("signature", "session"):
        for name in ("serving_default", "predict_probabilities"):
            got = results[how][name]
            for case, shape in BAD_SHAPES.items():
                assert got[case].startswith("refused"), (how, name, case, got[case])
                assert _shape_text(shape) in got[case] and expected in got[case], got[case]
            assert got["int32"].startswith("refused") and "int32" in got["int32"]
            assert got["empty batch"]["probabilities"] == [0, CLASSES], (how, name)
            assert got["good"]["probabilities"] == [2, CLASSES], (how, name)
        got = results[how]["serving_default"]["empty batch"]
        assert got == {"probabilities": [0, CLASSES], "top_k_indices": [0, TOP_K],
                       "top_k_scores": [0, TOP_K], "top_k_class_names": [0, TOP_K]}
        got = results[how]["serve_image_bytes"]
        for case in ("rank 2", "scalar"):
            assert got[case].startswith("refused") and "expected shape [?]" in got[case]
        assert "[1,1]" in got["rank 2"] and "[]" in got["scalar"]
        for case in ("not an image", "empty string"):
            assert got[case].startswith("refused"), (how, case, got[case])
        assert got["empty batch"]["probabilities"] == [0, CLASSES]
        assert got["good"]["probabilities"] == [1, CLASSES]


_LITE_ONNX_OPENVINO_CHILD = _CALL + """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
import onnxruntime as ort
import openvino as ov
from keras_resnext import export as export_lib

tflite, onnx, openvino, bad_shapes, size = (*sys.argv[1:4], json.loads(sys.argv[4]),
                                            int(sys.argv[5]))
cases = {name: np.zeros(shape, "float32") for name, shape in bad_shapes.items()}
cases.update({"int32": np.zeros([1, size, size, 3], "int32"),
              "empty batch": np.zeros([0, size, size, 3], "float32"),
              "good": np.zeros([2, size, size, 3], "float32")})
with open(tflite, "rb") as f:
    content = f.read()
lite = Interpreter(model_content=content).get_signature_runner("predict_probabilities")
session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
lite_runner = export_lib.tflite_runner(content)
compiled = ov.Core().compile_model(openvino, "CPU")
runtimes = {
    "litert": (lambda x: lite(images=x), Exception),
    "tflite_runner": (lambda x: {"probabilities": lite_runner(x)}, ValueError),
    "onnxruntime": (lambda x: {"probabilities": session.run(None, {"images": x})[0]},
                    Exception),
    "openvino": (lambda x: {"probabilities": compiled(x)[0]}, Exception),
}
results = {
    runtime: {case: call(f"{runtime} {case}", lambda: fn(x), errors)
              for case, x in cases.items()}
    for runtime, (fn, errors) in runtimes.items()}
print(json.dumps(results))
"""


def test_tflite_onnx_and_openvino_refuse_bad_requests(exported):
    paths = [os.path.join(exported, name) for name in
             ("tiny-1.float32.tflite", "tiny-1.onnx", "tiny-1.openvino.xml")]
    results = run_child(
        f"import sys; sys.argv[1:] = {[*paths, json.dumps(BAD_SHAPES), str(SIZE)]!r}\n"
        + _LITE_ONNX_OPENVINO_CHILD)
    for runtime in ("tflite_runner", "onnxruntime"):
        got = results[runtime]
        for case in BAD_SHAPES:
            assert got[case].startswith("refused"), (runtime, case, got[case])
        assert got["empty batch"]["probabilities"] == [0, CLASSES], runtime
        assert got["good"]["probabilities"] == [2, CLASSES], runtime
    for case in BAD_SHAPES:
        assert results["openvino"][case].startswith("refused"), (case, results["openvino"])
    assert results["openvino"]["good"]["probabilities"] == [2, CLASSES]
    # OpenVINO's CPU plugin refuses an empty batch (MaxPool: docs/deploy.md).
    assert (results["openvino"]["empty batch"] == {"probabilities": [0, CLASSES]}
            or results["openvino"]["empty batch"].startswith("refused"))
    assert results["onnxruntime"]["int32"].startswith("refused")
    # The Python runner converts integer pixels, as np.asarray(x, "float32") does.
    assert results["tflite_runner"]["int32"]["probabilities"] == [1, CLASSES]
    for case, shape in BAD_SHAPES.items():
        assert f"Received shape: {tuple(shape)}" in results["tflite_runner"][case]
    # LiteRT alone: no crash (the child returned), and the dtype is refused; the
    # shapes it runs anyway are listed in docs/deploy.md ("Bad input").
    assert results["litert"]["int32"].startswith("refused")
    assert results["litert"]["good"]["probabilities"] == [2, CLASSES]
