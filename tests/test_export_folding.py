"""Exports fold BatchNorm into the convolutions (issue 20), and say so in the report.

The SavedModel for TF Serving and the formats converted from it are written from
``keras_resnext.fold_batch_norm(model)``; every artifact is still checked against
the model itself. ``fold_batch_norm=False`` (``--no-fold-batch-norm``) writes the
model as it is; the keras-hub preset (for training) always keeps BatchNorm; a model
that cannot be folded is exported unfolded. The BatchNorms get statistics far from
0/1 (``randomize_batch_norms``), so a wrong fold changes the outputs.
"""

import collections
import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnext
from keras_resnext import export as export_lib
from keras_resnext import preprocessing

from helpers import FIXTURES, ROOT, TINY_SPEC, random_images, randomize_batch_norms, run_child

SIZE = 32


def _tiny_model(classifier_activation="softmax"):
    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=10,
                                classifier_activation=classifier_activation)
    randomize_batch_norms(model, affine=True)
    return model


def _batch_norms(model):
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def _grouped_convs(model):
    return sum(isinstance(layer, keras_resnext.GroupConv2D) for layer in model.layers)


def _functions(path):
    """Every function of a SavedModel (its serving graph), as stored."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return [function for meta_graph in proto.meta_graphs
            for function in meta_graph.graph_def.library.function]


def saved_graph_ops(path):
    """``Counter`` of the op types in a SavedModel's functions."""
    return collections.Counter(node.op for function in _functions(path)
                               for node in function.node_def)


def _fenced_convs(path):
    """``Conv2D`` nodes whose output goes through ``EnsureShape`` (``layers._fenced``)."""
    count = 0
    for function in _functions(path):
        ops = {node.name: node.op for node in function.node_def}
        count += sum(node.op == "EnsureShape" and ops.get(node.input[0].split(":")[0]) == "Conv2D"
                     for node in function.node_def)
    return count


def _fused_batch_norms(ops):
    return sum(n for op, n in ops.items() if op.startswith("FusedBatchNorm"))


def _served_probabilities(path, images):
    signature = tf.saved_model.load(path).signatures["serving_default"]
    return signature(images=tf.constant(images))["probabilities"].numpy()


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """``{fold_batch_norm: (report, SavedModel path)}`` of the same model."""
    out = {}
    for fold in (True, False):
        root = tmp_path_factory.mktemp(f"fold_{fold}")
        kwargs = {} if fold else {"fold_batch_norm": False}  # the default folds
        report = export_lib.export(model, root, model_name="tiny",
                                   formats=("saved_model", "onnx"), latency_runs=1,
                                   verify_in_subprocess=False, **kwargs)
        out[fold] = report, os.path.join(root, "tiny", "1")
    return out


def test_default_export_has_no_batch_norm_op_and_the_opt_out_keeps_them(exports, model):
    folded, unfolded = (saved_graph_ops(exports[fold][1]) for fold in (True, False))
    assert _fused_batch_norms(folded) == 0
    assert _fused_batch_norms(unfolded) >= _batch_norms(model) > 0
    # Folding changes no convolution: the same Conv2D ops, each grouped one fenced
    # (EnsureShape) from the remapper as before: the portable graph is kept.
    assert folded["Conv2D"] == unfolded["Conv2D"] > 0
    fenced = _fenced_convs(exports[True][1])
    assert fenced == _fenced_convs(exports[False][1]) > 0
    assert fenced % _grouped_convs(model) == 0  # each grouped conv, in each traced function


def test_report_says_what_was_folded(exports, model):
    report, _ = exports[True]
    assert report["batch_norm_folded"] is True
    assert report["folded_batch_norms"] == _batch_norms(model)  # each follows a conv
    assert report["batch_norm_not_folded_because"] is None
    off, _ = exports[False]
    assert (off["batch_norm_folded"], off["folded_batch_norms"]) == (False, 0)
    assert off["batch_norm_not_folded_because"] == "fold_batch_norm=False"
    out_dir = os.path.dirname(os.path.dirname(exports[True][1]))
    with open(os.path.join(out_dir, export_lib.REPORT_JSON), encoding="utf-8") as f:
        assert json.load(f)["folded_batch_norms"] == _batch_norms(model)
    with open(os.path.join(out_dir, export_lib.REPORT_MD), encoding="utf-8") as f:
        assert f"BatchNorm: {_batch_norms(model)} folded into their convolutions" in f.read()
    assert "BatchNorm: not folded (fold_batch_norm=False)." in export_lib.report_markdown(off)


def test_folded_artifacts_match_the_unfolded_keras_model(exports, model):
    report, path = exports[True]
    images = random_images(6, SIZE, seed=3)
    expected = np.asarray(model(preprocessing.preprocess_input(images), training=False))
    assert expected.max() - expected.min() > 0.05  # not flat: a wrong fold would show
    got = _served_probabilities(path, images)
    assert np.abs(got - expected).max() <= report["tolerances"]["saved_model"]
    rows = {row["format"]: row for row in report["artifacts"]}
    assert rows["saved_model"]["ok"] and rows["onnx"]["ok"]
    assert rows["onnx"]["grouped_conv_nodes"] == _grouped_convs(model)


def test_export_saved_model_folds_too(model, tmp_path):
    """The SavedModel that training/fit.py writes at the end is the folded one."""
    folded = export_lib.export_saved_model(model, tmp_path / "a", model_name="m")
    assert _fused_batch_norms(saved_graph_ops(folded)) == 0
    unfolded = export_lib.export_saved_model(model, tmp_path / "b", model_name="m",
                                             fold_batch_norm=False)
    assert _fused_batch_norms(saved_graph_ops(unfolded)) > 0
    images = random_images(4, SIZE, seed=5)
    np.testing.assert_allclose(_served_probabilities(folded, images),
                               _served_probabilities(unfolded, images), rtol=0, atol=1e-5)


def test_bad_fold_batch_norm_is_refused_before_work(model, tmp_path):
    with pytest.raises(ValueError, match=r"`fold_batch_norm` must be True or False. "
                                         r"Received: fold_batch_norm='no'"):
        export_lib.export(model, tmp_path / "o", model_name="m", fold_batch_norm="no")
    assert not (tmp_path / "o").exists()


def test_cli_no_fold_batch_norm(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_cli", os.path.join(ROOT, "applications", "export.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "out"
    code = cli.main(["--spec-json", os.path.join(FIXTURES, "resnext_tiny.json"),
                     "--model-name", "tiny", "--classes", "10", "--input-size", "32",
                     "--formats", "saved_model", "--no-fold-batch-norm",
                     "--out", os.fspath(out), "--latency-runs", "1"])
    assert code == 0
    assert "BatchNorm: not folded (fold_batch_norm=False)." in capsys.readouterr().out
    with open(out / export_lib.REPORT_JSON, encoding="utf-8") as f:
        assert json.load(f)["batch_norm_folded"] is False
    assert _fused_batch_norms(saved_graph_ops(out / "tiny" / "1")) > 0


# Written where oneDNN is on, by the default (folded) export; read where it is off.
# After folding the grouped convolutions have a bias: Conv2D + bias fused by the
# remapper into _FusedConv2D would fail there ("does not support grouped
# convolutions"), unless the EnsureShape fence keeps them apart.
WRITE = """
    import json, sys
    import keras, numpy as np
    import keras_resnext
    from keras_resnext import export, preprocessing
    from helpers import TINY_SPEC, random_images, randomize_batch_norms

    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=10)
    randomize_batch_norms(model, affine=True)
    report = export.export(model, sys.argv[1], model_name="tiny", formats=("saved_model",),
                           latency_runs=1, verify_in_subprocess=False)
    images = random_images(4, 32, seed=7)
    np.savez(sys.argv[1] + "/expected.npz", images=images, probabilities=np.asarray(
        model(preprocessing.preprocess_input(images), training=False)))
    print(json.dumps({"folded": report["folded_batch_norms"],
                      "ok": report["artifacts"][-1]["ok"]}))
"""

READ = """
    import json, sys
    import numpy as np, tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    assert not _pywrap_util_port.IsMklEnabled()
    data = np.load(sys.argv[1] + "/expected.npz")
    loaded = tf.saved_model.load(sys.argv[1] + "/tiny/1")
    got = loaded.signatures["serving_default"](images=tf.constant(data["images"]))
    print(json.dumps(float(np.abs(got["probabilities"].numpy() - data["probabilities"]).max())))
"""


def test_folded_saved_model_written_with_onednn_runs_without_it(tmp_path):
    argv = f"import sys; sys.argv = ['x', {str(tmp_path)!r}]\n"
    written = json.loads(run_child(argv + textwrap.dedent(WRITE), "1").strip().splitlines()[-1])
    assert written["folded"] > 0 and written["ok"]
    diff = json.loads(run_child(argv + textwrap.dedent(READ), "0").strip().splitlines()[-1])
    assert diff <= 1e-5


def test_keras_hub_preset_keeps_batch_norm(model, tmp_path):
    pytest.importorskip("keras_resnext.keras_hub")
    import keras_hub

    report = export_lib.export(model, tmp_path, model_name="tiny",
                               formats=("saved_model", "keras_hub"), latency_runs=1,
                               verify_in_subprocess=False)
    assert report["batch_norm_folded"] is True
    assert _fused_batch_norms(saved_graph_ops(tmp_path / "tiny" / "1")) == 0
    preset = keras_hub.models.ImageClassifier.from_preset(
        export_lib.keras_hub_path(os.fspath(tmp_path), "tiny", 1))
    assert _batch_norms(preset.backbone) == _batch_norms(model)
    original = model.get_layer("conv1_bn").moving_variance
    np.testing.assert_array_equal(
        np.asarray(preset.backbone.get_layer("conv1_bn").moving_variance), np.asarray(original))
    rows = {row["format"]: row for row in report["artifacts"]}
    assert rows["keras_hub"]["ok"] and rows["saved_model"]["ok"]


class _Wrapped(keras.Model):
    """A subclassed classifier: ``fold_batch_norm`` refuses it, the export takes it."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    @property
    def input_shape(self):
        return self.inner.input_shape

    @property
    def output_shape(self):
        return self.inner.output_shape


def test_a_model_that_cannot_be_folded_is_exported_unfolded(tmp_path):
    inner = _tiny_model(classifier_activation=None)  # logits: the export adds the softmax
    model = _Wrapped(inner, name="wrapped")
    with pytest.raises(ValueError, match="needs a functional model"):
        keras_resnext.fold_batch_norm(model)
    with pytest.warns(UserWarning, match="BatchNorm not folded: fold_batch_norm needs a "
                                         "functional model"):
        report = export_lib.export(model, tmp_path, model_name="sub",
                                   formats=("saved_model",), latency_runs=1,
                                   verify_in_subprocess=False)
    assert (report["batch_norm_folded"], report["folded_batch_norms"]) == (False, 0)
    assert "Received: _Wrapped" in report["batch_norm_not_folded_because"]
    assert report["artifacts"][-1]["ok"]
    assert _fused_batch_norms(saved_graph_ops(tmp_path / "sub" / "1")) > 0
