"""The ReXNet family: timm's channel schedule, exact sizes, parity, strict conversion."""

import os

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext import model as model_lib
from keras_resnext.families import rexnet

from helpers import FIXTURES
from helpers import count_trainable
from helpers import fixture_model
from helpers import load_fixture_config
from helpers import random_images
from helpers import REXNET_PARAMS as EXPECTED_PARAMS


# Stem and head widths (FAMILIES.md's table).
EXPECTED_STEM_HEAD = {
    "rexnet_100": (32, 1280),
    "rexnet_130": (42, 1664),
    "rexnet_150": (48, 1920),
    "rexnet_200": (64, 2560),
    "rexnet_300": (96, 3840),
}


def test_registry():
    assert set(rexnet.VARIANTS) == set(EXPECTED_PARAMS)
    assert set(rexnet.FACTORIES.values()) == set(rexnet.VARIANTS)
    for public_name, arch in rexnet.FACTORIES.items():
        assert model_lib.FACTORIES[public_name] == arch
        assert keras_resnext.list_models().count(arch) == 1
    for spec in rexnet.VARIANTS.values():
        assert spec.default_size == 224 and spec.description


def test_schedule_matches_timm_fixture():
    config = load_fixture_config("rexnet_tiny")
    spec = rexnet.Spec.from_config(config)
    derived = config["derived"]
    assert spec.stem_chs == derived["stem_chs"]
    assert spec.head_chs == derived["head_chs"]
    ours = [dict(in_chs=b.in_chs, dw_chs=b.dw_chs, out_chs=b.out_chs, stride=b.stride,
                 exp=b.expand, se_rd_chs=b.se_chs, shortcut=b.shortcut)
            for b in spec.blocks]
    assert ours == derived["blocks"]


def test_half_to_even_widths():
    # rexnet_100's schedule has exact halves 38.5 and 128.5 (FAMILIES.md item 8):
    # Python round() gives 38 and 128; half-up would give 39 and 129.
    widths = [b.out_chs for b in rexnet.VARIANTS["rexnet_100"].blocks]
    assert 38 in widths and 128 in widths
    assert 39 not in widths and 129 not in widths


def test_stem_and_first_block_keep_their_width_below_one():
    spec = rexnet.Spec(width_mult=0.25)
    assert spec.stem_chs == 32 and spec.blocks[0].out_chs == 16


@pytest.mark.parametrize("name", [
    "rexnet_100",
    pytest.param("rexnet_130", marks=pytest.mark.slow),
    pytest.param("rexnet_150", marks=pytest.mark.slow),
    pytest.param("rexnet_200", marks=pytest.mark.slow),
    pytest.param("rexnet_300", marks=pytest.mark.slow),
])
def test_exact_parameter_counts(name):
    model = keras_resnext.create_model(name)
    assert count_trainable(model) == EXPECTED_PARAMS[name]
    stem, head = EXPECTED_STEM_HEAD[name]
    assert model.get_layer("conv1_conv").filters == stem
    assert model.get_layer("top_conv").filters == head
    # Every grouped convolution is a GroupConv2D; the depthwise ones are
    # DepthwiseConv2D, one per block.
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1:
            assert isinstance(layer, keras_resnext.GroupConv2D), layer.name
    depthwise = [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == len(rexnet.VARIANTS[name].blocks)
    if name == "rexnet_100":
        # timm reports ~0.41 GMACs; count_macs leaves BN and element-wise ops out.
        macs = keras_resnext.count_macs(model)
        assert 0.38e9 < macs < 0.42e9
        depthwise_macs = sum(
            int(np.prod(l.output.shape[1:])) * 9 for l in depthwise)
        without = sum(
            int(np.prod(l.output.shape[1:3])) * int(np.prod(l.kernel.shape))
            for l in model.layers if isinstance(l, keras.layers.Conv2D))
        without += int(np.prod(model.get_layer("predictions").kernel.shape))
        assert macs == without + depthwise_macs


@pytest.mark.slow
def test_full_size_inverse_round_trip():
    source = keras_resnext.create_model("rexnet_100", classifier_activation=None)
    rng = np.random.default_rng(0)
    for w in source.weights:  # random BN statistics too, not only kernels
        w.assign(rng.standard_normal(w.shape).astype("float32"))
    state_dict = convert.keras_to_torch(source)
    assert "features.16.conv.weight" in state_dict and "head.fc.weight" in state_dict
    target = keras_resnext.create_model("rexnet_100", classifier_activation=None)
    convert.torch_to_keras(target, state_dict)
    assert len(source.weights) == len(target.weights)
    for a, b in zip(source.weights, target.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("kwargs, message", [
    (dict(width_mult=0), "width_mult=0"),
    (dict(width_mult=-1.5), "width_mult=-1.5"),
    (dict(depth_mult=0.0), "depth_mult=0.0"),
    (dict(depth_mult=-1), "depth_mult=-1"),
    (dict(se_ratio=1.0), "se_ratio=1.0"),
    (dict(se_ratio=-0.1), "se_ratio=-0.1"),
    (dict(ch_div=0), "ch_div=0"),
])
def test_bad_spec_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rexnet.Spec(**kwargs)


def test_se_ratio_zero_builds_without_se():
    model = keras_resnext.build(rexnet.Spec(width_mult=0.25, depth_mult=0.2, se_ratio=0),
                                input_shape=(32, 32, 3), classes=3)
    assert not [l for l in model.layers if l.name.endswith("_se_fc1")]


def test_from_config_rejects_other_activations():
    config = dict(load_fixture_config("rexnet_tiny"), act_layer="relu")
    with pytest.raises(ValueError, match="act_layer='relu'"):
        rexnet.Spec.from_config(config)


def test_other_architecture_state_dict_raises():
    model, _ = fixture_model("rexnet_tiny")
    before = [w.numpy().copy() for w in model.weights]
    other = convert.read_safetensors(os.path.join(FIXTURES, "resnext_tiny.safetensors"))
    with pytest.raises(ValueError, match=r"no tensor 'stem\.conv\.weight'"):
        convert.torch_to_keras(model, other)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_pyramid_levels_and_shapes():
    config = load_fixture_config("rexnet_tiny")
    blocks = config["derived"]["blocks"]
    model, _ = fixture_model("rexnet_tiny", input_shape=(64, 64, 3))
    outputs = keras_resnext.pyramid_model(model).predict(random_images(1, 64), verbose=0)
    assert list(outputs) == ["P1", "P2", "P3", "P4", "P5"]
    # The last block of each stride (timm's derived widths), then the head conv.
    last = {}
    stride = 2
    for block in blocks:
        stride *= block["stride"]
        last[stride] = block["out_chs"]
    expected = {"P1": (32, 32, last[2]), "P2": (16, 16, last[4]), "P3": (8, 8, last[8]),
                "P4": (4, 4, last[16]), "P5": (2, 2, config["derived"]["head_chs"])}
    assert {k: v.shape[1:] for k, v in outputs.items()} == expected


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float32"])
def test_builds_and_predicts_under_dtype_policy(policy, dtype_policy):
    dtype_policy(policy)
    model, state_dict = fixture_model("rexnet_tiny")
    convert.torch_to_keras(model, state_dict)
    io = np.load(os.path.join(FIXTURES, "rexnet_tiny_io.npz"))
    logits = model.predict(io["input_nhwc"], verbose=0)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    if policy == "mixed_bfloat16":
        assert model.get_layer("conv2_block1_2_conv").compute_dtype == "bfloat16"
        assert np.abs(logits - io["logits"]).max() < 0.5
    else:
        assert np.abs(logits - io["logits"]).max() <= 1e-4
