"""PyTorch-layout <-> Keras conversion: parity with timm, strictness, round trips."""

import os

import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext.families import resnet

from helpers import FIXTURES
from helpers import fixture_model

PLAIN = resnet.VARIANTS["resnext50_32x4d"]
AVG = resnet.VARIANTS["resnext50d_32x4d"]


def test_deep_stem_and_avg_down_names():
    assert resnet.torch_prefix("conv1_2_bn", PLAIN) == "conv1.4"
    assert resnet.torch_prefix("conv1_3_bn", PLAIN) == "bn1"
    assert resnet.torch_prefix("conv4_block3_2_conv", PLAIN) == "layer3.2.conv2"
    assert resnet.torch_prefix("conv2_block1_0_bn", PLAIN) == "layer1.0.downsample.1"
    assert resnet.torch_prefix("conv2_block1_0_conv", AVG) == "layer1.0.downsample.1"
    assert resnet.torch_prefix("conv2_block1_0_bn", AVG) == "layer1.0.downsample.2"
    assert resnet.torch_prefix("conv2_block1_add", PLAIN) is None


def test_shape_mismatch_names_tensor_and_both_shapes():
    # resnext_tiny_d's file into resnext_tiny: the stems differ first.
    model, _ = fixture_model("resnext_tiny")
    _, other = fixture_model("resnext_tiny_d")
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"no tensor 'conv1.weight'"):
        convert.torch_to_keras(model, other)
    # Same names, other widths: the first grouped conv has another group width.
    _, state_dict = fixture_model("resnext_tiny")
    state_dict = dict(state_dict)
    state_dict["layer1.0.conv2.weight"] = np.zeros((8, 4, 3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        convert.torch_to_keras(model, state_dict, source="'x.safetensors'")
    message = str(info.value)
    assert "'layer1.0.conv2.weight'" in message
    assert "(8, 4, 3, 3)" in message and "(8, 2, 3, 3)" in message
    assert "(3, 3, 2, 8)" in message  # the Keras shape too
    # Nothing was assigned by the failed calls.
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_every_tensor_must_be_used():
    model, state_dict = fixture_model("resnext_tiny")
    extra = dict(state_dict, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"1 tensor\(s\).*layer5\.0\.conv1\.weight"):
        convert.torch_to_keras(model, extra)
    missing = dict(state_dict)
    del missing["layer4.0.bn3.running_var"]
    with pytest.raises(ValueError, match=r"no tensor 'layer4\.0\.bn3\.running_var'"):
        convert.torch_to_keras(model, missing)


def test_headless_and_new_head():
    model, state_dict = fixture_model("resnext_tiny")
    convert.torch_to_keras(model, state_dict)
    reference = model.get_layer("conv5_block1_out").output
    features = keras_resnext.model.keras.Model(model.inputs, reference)
    x = np.load(os.path.join(FIXTURES, "resnext_tiny_io.npz"))["input_nhwc"]
    expected = features.predict(x, verbose=0)

    headless, _ = fixture_model("resnext_tiny", include_top=False)
    convert.torch_to_keras(headless, state_dict)  # fc.* skipped
    np.testing.assert_allclose(headless.predict(x, verbose=0), expected, atol=1e-5)
    assert "fc.weight" not in convert.keras_to_torch(headless)

    three, _ = fixture_model("resnext_tiny", classes=3)
    with pytest.raises(ValueError, match=r"'fc.weight'.*\(10, 512\).*\(3, 512\).*skip_head"):
        convert.torch_to_keras(three, state_dict)
    head_before = three.get_layer("predictions").kernel.numpy().copy()
    convert.torch_to_keras(three, state_dict, skip_head=True)
    np.testing.assert_array_equal(three.get_layer("predictions").kernel.numpy(), head_before)
    np.testing.assert_array_equal(
        three.get_layer("conv1_conv").kernel.numpy(),
        state_dict["conv1.weight"].transpose(2, 3, 1, 0))


def test_foreign_layer_is_refused():
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="mystery")(inputs))
    with pytest.raises(ValueError, match="Expected a model built by keras_resnext.build"):
        convert.weight_table(model)


def test_export_file_and_corrupt_file(tmp_path):
    model, state_dict = fixture_model("resnext_tiny")
    convert.torch_to_keras(model, state_dict)
    path = tmp_path / "exported.safetensors"
    convert.export_torch_weights(model, path)
    assert sorted(os.listdir(tmp_path)) == ["exported.safetensors"]
    reread = convert.read_safetensors(path)
    for key in state_dict:
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(reread[key], state_dict[key])
    with pytest.raises(ValueError, match="must end with '.safetensors'"):
        convert.export_torch_weights(model, tmp_path / "x.bin")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        convert.read_safetensors(truncated)
    with pytest.raises(FileNotFoundError, match="no-such"):
        convert.read_safetensors(tmp_path / "no-such.safetensors")


@pytest.mark.slow
def test_full_size_resnext50_round_trip_is_exact():
    import keras

    keras.utils.set_random_seed(3)
    source = keras_resnext.create_model("resnext50_32x4d")
    # Random BN statistics too, so every tensor kind is checked.
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in (layer.moving_mean, layer.beta):
                var.assign(rng.normal(size=var.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    state_dict = convert.keras_to_torch(source)
    # torchvision's state_dict(): 53 convs, 53 BNs x 5 (with num_batches_tracked), fc.
    assert len(state_dict) == 53 + 53 * 5 + 2 == 320
    assert state_dict["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)
    assert state_dict["fc.weight"].shape == (1000, 2048)
    assert sum(v.size for k, v in state_dict.items()
               if "running" not in k and "num_batches" not in k) == 25_028_904

    target = keras_resnext.create_model("resnext50_32x4d")
    convert.torch_to_keras(target, state_dict)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
