"""The shared model harness, parametrized over every family and registered model.

For each family's timm fixture: build, call, config round trip, ``.keras``
round trip, logits parity with timm (1e-4), and training under every dtype
policy. For each registered name: factory, registry entry, README row.
"""

import os

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext import families

from helpers import FIXTURE_FAMILIES
from helpers import FIXTURES
from helpers import assert_save_load_round_trip
from helpers import count_trainable
from helpers import fixture_model
from helpers import load_fixture_config
from helpers import random_images
from helpers import expected_params

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_every_family_has_a_fixture_and_every_model_a_parameter_count():
    assert set(FIXTURE_FAMILIES.values()) == set(families.families())
    assert set(expected_params()) == set(families.registry())


def test_registry_factories_and_readme():
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    params = expected_params()
    assert keras_resnext.list_models() == sorted(params)  # the test modules' own list
    pretrained = keras_resnext.list_models(pretrained=True)
    assert "resnext50_32x4d" in pretrained and "resnext29_8x64d" not in pretrained
    for name, entry in families.registry().items():
        assert entry.spec is keras_resnext.get_spec(name)
        assert families.family_of(entry.spec) is entry.family
        factory = f"`{entry.factory}`" if entry.factory else "-"
        assert f"| `{name}` | {factory} | {params[name]:,}" in readme, name
        if entry.factory:
            fn = getattr(keras_resnext, entry.factory)
            assert entry.factory in keras_resnext.__all__
            assert fn.__name__ == entry.factory
            assert entry.spec.description in fn.__doc__


def test_a_family_refuses_another_familys_spec():
    """Each family's builder names both families, before any layer is made."""
    one_spec = {}
    for entry in families.registry().values():
        one_spec.setdefault(entry.family.NAME, entry.spec)
    assert len(one_spec) == len(families.families()) >= 4
    inputs = keras.Input((64, 64, 3))
    for name, family in families.families().items():
        for other, spec in one_spec.items():
            if other == name:
                continue
            with pytest.raises(ValueError, match=(
                    rf"The {name} family builds a {name}\.Spec only\. "
                    rf"Received: a {other}\.Spec")):
                family.features(inputs, spec)
        # Its own spec builds (the check is not a blanket refusal).
        assert list(family.features(inputs, one_spec[name]))[-1] == "P5"


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_fixture_logits_match_timm(name):
    model, state_dict = fixture_model(name)
    # timm's parameters: every tensor but the BN running statistics.
    timm_params = sum(v.size for k, v in state_dict.items()
                      if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count_trainable(model) == timm_params
    convert.torch_to_keras(model, state_dict)
    io = np.load(os.path.join(FIXTURES, f"{name}_io.npz"))
    logits = model.predict(io["input_nhwc"], verbose=0)
    assert np.abs(io["logits"]).max() > 1  # the comparison is not against ~zeros
    assert np.abs(logits - io["logits"]).max() <= 1e-4
    assert (logits.argmax(-1) == io["logits"].argmax(-1)).all()


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_inverse_returns_the_exact_state_dict(name):
    """keras_to_torch gives back the fixture's state dict: names, shapes, dtypes, values."""
    model, state_dict = fixture_model(name)
    convert.torch_to_keras(model, state_dict)
    back = convert.keras_to_torch(model)
    assert list(back) and set(back) == set(state_dict)
    for key, value in state_dict.items():
        assert back[key].shape == value.shape, key
        assert back[key].dtype == value.dtype, key
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_build_call_config_and_keras_round_trips(name, tmp_path):
    model, state_dict = fixture_model(name, input_shape=(64, 64, 3))
    convert.torch_to_keras(model, state_dict)
    x = random_images(2, 64) / 255.0
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, load_fixture_config(name)["num_classes"])
    assert np.isfinite(y).all()
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(rebuilt(x, training=False)), y)
    assert_save_load_round_trip(model, x, tmp_path)
    for layer in model.layers:  # every grouped conv runs the fast exportable op
        if getattr(layer, "groups", 1) > 1:
            assert isinstance(layer, keras_resnext.GroupConv2D), layer.name
    features = keras_resnext.pyramid_model(model)(x)
    strides = [64 // v.shape[1] for v in features.values()]
    assert strides == sorted(strides) and list(features) == [
        f"P{int(np.log2(s))}" for s in strides]


@pytest.mark.parametrize("policy", ["float16", "bfloat16", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["resnext_tiny_d", "resnest_tiny_4s2x", "res2next_tiny_d",
                                  "rexnet_tiny"])
def test_dtype_policies_build_predict_and_fit(name, policy, dtype_policy):
    dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model, state_dict = fixture_model(name, input_shape=(32, 32, 3), classes=3)
    # timm's weights (realistic scales), a new 3-class head.
    convert.torch_to_keras(model, state_dict, skip_head=True)
    x = random_images(4, 32) / 255.0
    out = model.predict(x, verbose=0)
    assert out.dtype == "float32" and np.isfinite(out).all()
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # (Pure float16 has no loss scaling, and a step can push the fixture's random BN
    # statistics out of float16's range: the assertion is that every op trains.)
    history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name", ["resnest_tiny_4s2x", "res2next_tiny_d", "rexnet_tiny"])
def test_every_family_exports_to_every_format(name, tmp_path):
    """SavedModel, TFLite (float32, dynamic) and ONNX, each checked against Keras."""
    from keras_resnext import export as export_lib

    model, state_dict = fixture_model(name, input_shape=(48, 48, 3))
    convert.torch_to_keras(model, state_dict)
    softmax = keras.Model(model.input, keras.layers.Softmax(dtype="float32")(model.output))
    report = export_lib.export(
        softmax, tmp_path / "out", model_name=name.replace("_", "-"),
        tflite_quantizations=("float32", "dynamic"), latency_runs=1,
        verify_in_subprocess=False)
    rows = {row["format"]: row for row in report["artifacts"]}
    assert {"saved_model", "tflite_float32", "tflite_dynamic", "onnx"} <= set(rows)
    assert all(row["ok"] for row in rows.values() if "ok" in row), rows
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5
    assert rows["tflite_float32"]["max_abs_diff"] <= 1e-4
    assert rows["onnx"]["max_abs_diff"] <= 1e-4
    # Every grouped (and depthwise) convolution stays one ONNX Conv with its groups.
    groups = [l.groups for l in model.layers if getattr(l, "groups", 1) > 1] + [
        l.kernel.shape[2] for l in model.layers
        if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert groups and rows["onnx"]["grouped_conv_nodes"] == len(groups)
    assert sorted(set(rows["onnx"]["grouped_conv_groups"])) == sorted(set(groups))
