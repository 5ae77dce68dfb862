"""Keras' own ``model.export()`` on a model of this package writes the portable graph.

The writer and the reader are separate processes with ``TF_ENABLE_ONEDNN_OPTS``
set explicitly: a SavedModel written where oneDNN is off must hold one grouped
convolution per ``GroupConv2D`` (not the blocked formulation that runtime
trains with), convert to ONNX ``Conv`` nodes with ``group > 1``, and run where
oneDNN is on and where it is off.
"""

import json
import os
import textwrap

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext.zoo_model import ZooModel

from helpers import TINY_SPEC
from helpers import TINY
from helpers import run_child

WRITE = f"""
    import json, sys
    import keras, numpy as np
    import keras_resnext
    from keras_resnext import export

    keras.utils.set_random_seed(0)
    model = keras_resnext.build({TINY}, input_shape=(32, 32, 3), classes=3)
    if sys.argv[2] == "reloaded":  # a .keras file of it, loaded back, exports the same
        model.save(sys.argv[1] + "/model.keras")
        model = keras.saving.load_model(sys.argv[1] + "/model.keras")
    for layer in model.layers:  # non-trivial BN statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-1, 1, layer.moving_mean.shape[0]))
            layer.moving_variance.assign(np.linspace(0.5, 2, layer.moving_variance.shape[0]))
    model.export(sys.argv[1] + "/saved", verbose=False)
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    np.savez(sys.argv[1] + "/expected.npz", x=x, y=np.asarray(model(x, training=False)))

    from tf2onnx import convert, tf_loader
    graph_def, inputs, outputs = tf_loader.from_saved_model(
        sys.argv[1] + "/saved", None, None, tag="serve", signatures=["serve"])
    proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                      opset=17)
    print(json.dumps({{
        "class": type(model).__name__,
        "grouped_layers": sum(isinstance(l, keras_resnext.GroupConv2D) for l in model.layers),
        "onnx_groups": export.onnx_grouped_convs(proto)}}))
"""

READ = """
    import sys
    import numpy as np, tensorflow as tf
    data = np.load(sys.argv[1] + "/expected.npz")
    loaded = tf.saved_model.load(sys.argv[1] + "/saved")
    np.testing.assert_allclose(loaded.serve(tf.constant(data["x"])).numpy(), data["y"],
                               rtol=1e-5, atol=1e-6)
    print("READ-OK")
"""


def argv(tmp_path, *rest):
    return f"import sys; sys.argv = ['x', {str(tmp_path)!r}, *{list(rest)!r}]\n"


@pytest.mark.slow
@pytest.mark.parametrize("writer,source", [("0", "built"), ("1", "built"), ("0", "reloaded")])
def test_model_export_is_portable(writer, source, tmp_path):
    out = run_child(argv(tmp_path, source) + textwrap.dedent(WRITE), writer)
    written = json.loads(out.strip().splitlines()[-1])
    assert written["class"] == "ZooModel"
    # One ONNX Conv with group=C per GroupConv2D (not several per blocked conv).
    assert written["onnx_groups"] == [TINY_SPEC.cardinality] * written["grouped_layers"]
    for reader in ("0", "1"):
        assert "READ-OK" in run_child(argv(tmp_path) + textwrap.dedent(READ), reader)


def test_built_models_are_zoo_models_and_reload_as_such(tmp_path):
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=3)
    assert isinstance(model, ZooModel) and isinstance(model, keras.Model)
    pyramid = keras_resnext.pyramid_model(model)
    assert isinstance(pyramid, ZooModel)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is ZooModel
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(restored(x)))
    clone = keras.models.clone_model(model)
    assert isinstance(clone, ZooModel)
