"""The ResNeSt family: sizes, timm parity, split attention by hand, bad input."""

import json
import os

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext.families import resnest

from helpers import FIXTURES
from helpers import assert_save_load_round_trip
from helpers import count_trainable
from helpers import fixture_model
from helpers import load_fixture_config
from helpers import random_images
from helpers import RESNEST_PARAMS as EXPECTED_PARAMS

SOURCES = os.path.join(os.path.dirname(__file__), "..", "tools", "weights_sources",
                       "resnest.json")

SMALL = ("resnest14d", "resnest26d")
EXPECTED_FACTORIES = {
    "ResNeSt14D": "resnest14d", "ResNeSt26D": "resnest26d", "ResNeSt50": "resnest50d",
    "ResNeSt101": "resnest101e", "ResNeSt200": "resnest200e", "ResNeSt269": "resnest269e",
}
# A ResNeSt small enough to build and run in well under a second.
TINY = resnest.Spec(depths=(1, 1), widths=(8, 16), cardinality=2, base_width=64,
                    radix=2, stem_width=8)


def randomize_bn_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in (layer.moving_mean, layer.beta):
                var.assign(rng.normal(size=var.shape).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))


def assert_grouped_convs_are_group_conv2d(model):
    for layer in model.layers:
        if getattr(layer, "groups", 1) > 1:
            assert isinstance(layer, keras_resnext.GroupConv2D), layer.name


def test_registry():
    assert set(resnest.VARIANTS) == set(EXPECTED_PARAMS)
    assert resnest.FACTORIES == EXPECTED_FACTORIES
    with open(SOURCES, encoding="utf-8") as f:
        sources = json.load(f)
    defaults = sources.pop("_default_tags")
    assert set(sources) == set(defaults) == set(resnest.VARIANTS)
    for name, spec in resnest.VARIANTS.items():
        entry = sources[name][defaults[name]]
        # The default input size is that of the weights.
        assert spec.default_size == entry["input_size"], name
        assert entry["hf_hub_id"] == f"timm/{name}.{defaults[name]}"
        assert entry["license"] == "apache-2.0"


def producer(model, tensor):
    """The layer of ``model`` whose output is ``tensor``."""
    return next(layer for layer in model.layers if layer.output is tensor)


def check_variant(name):
    spec = resnest.VARIANTS[name]
    model = keras_resnext.create_model(name)
    assert count_trainable(model) == EXPECTED_PARAMS[name]
    assert model.input_shape == (None, spec.default_size, spec.default_size, 3)
    assert_grouped_convs_are_group_conv2d(model)
    # One grouped split-attention 3x3 per block, never strided (avd pools).
    convs = [l for l in model.layers if "_block" in l.name and l.name.endswith("_2_conv")]
    assert len(convs) == sum(spec.depths)
    assert {(l.groups, l.strides) for l in convs} == {
        (spec.cardinality * spec.radix, (1, 1))}
    pools = [l for l in model.layers if l.name.endswith("_avd_pool")]
    assert len(pools) == len(spec.depths) - 1
    first = model.get_layer("conv3_block1_avd_pool")
    assert first.input.shape[-1] == spec.bottleneck_width(1) and first.strides == (2, 2)
    # The pool's input: ZeroPadding2D(1) of the 1x1's output (avd_first) or
    # of the split attention's output.
    pad = producer(model, first.input)
    assert pad.name == "conv3_block1_avd_pool_pad" and pad.padding == ((1, 1), (1, 1))
    assert producer(model, pad.input).name == (
        "conv3_block1_1_relu" if spec.avd_first
        else "conv3_block1_2_attn_out" if spec.radix > 1
        else "conv3_block1_2_attn_scale")

@pytest.mark.parametrize("name", SMALL)
def test_parameter_counts_small(name):
    check_variant(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(EXPECTED_PARAMS) - set(SMALL)))
def test_parameter_counts(name):
    check_variant(name)


def test_attention_widths():
    # timm: make_divisible(group_width * radix * 0.25, 8, min_value=32).
    spec = resnest.VARIANTS["resnest50d"]
    assert [spec.attention_width(s) for s in range(4)] == [32, 64, 128, 256]
    spec = resnest.VARIANTS["resnest50d_4s2x40d"]
    assert [spec.bottleneck_width(s) for s in range(4)] == [80, 160, 320, 640]
    assert [spec.attention_width(s) for s in range(4)] == [80, 160, 320, 640]
    spec = resnest.VARIANTS["resnest50d_1s4x24d"]
    assert [spec.attention_width(s) for s in range(4)] == [32, 48, 96, 192]


def test_export_torch_weights_file(tmp_path):
    model, state_dict = fixture_model("resnest_tiny_4s2x")
    convert.torch_to_keras(model, state_dict)
    path = tmp_path / "resnest.safetensors"
    convert.export_torch_weights(model, path)
    reread = convert.read_safetensors(path)
    assert set(reread) == set(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(reread[key], value, err_msg=key)


def test_timm_names():
    spec = resnest.VARIANTS["resnest50d"]
    expected = {
        "conv1_1_conv": "conv1.0", "conv1_3_bn": "bn1",
        "conv2_block1_0_conv": "layer1.0.downsample.1",
        "conv2_block1_0_bn": "layer1.0.downsample.2",
        "conv3_block2_1_conv": "layer2.1.conv1",
        "conv4_block6_2_conv": "layer3.5.conv2.conv",
        "conv4_block6_2_bn": "layer3.5.conv2.bn0",
        "conv5_block1_2_attn_fc1": "layer4.0.conv2.fc1",
        "conv5_block1_2_attn_bn": "layer4.0.conv2.bn1",
        "conv5_block1_2_attn_fc2": "layer4.0.conv2.fc2",
        "conv5_block3_3_bn": "layer4.2.bn3",
        "conv3_block1_avd_pool": None, "conv3_block1_2_attn_rsoftmax": None,
    }
    for layer_name, prefix in expected.items():
        assert resnest.torch_prefix(layer_name, spec) == prefix, layer_name


def attention_by_hand(x, fc1, bn, fc2, *, radix, cardinality):
    """timm's SplitAttn after its conv/bn0/act0, in NumPy from NHWC ``x``."""

    def grouped_1x1(v, layer):
        kernel = layer.kernel.numpy()[0, 0]  # (in / groups, out)
        ins, outs = np.split(v, cardinality, -1), np.split(kernel, cardinality, -1)
        return np.concatenate([a @ k for a, k in zip(ins, outs)], -1) + layer.bias.numpy()

    batch, _, _, channels = x.shape
    splits = x.reshape(batch, *x.shape[1:3], radix, channels // radix)
    gap = splits.sum(3).mean((1, 2))
    hidden = grouped_1x1(gap, fc1)
    hidden = ((hidden - bn.moving_mean.numpy())
              / np.sqrt(bn.moving_variance.numpy() + 1e-5) * bn.gamma.numpy()
              + bn.beta.numpy())
    logits = grouped_1x1(np.maximum(hidden, 0), fc2)
    if radix == 1:
        attn = 1 / (1 + np.exp(-logits))
        assert 0.2 < np.mean((attn > 0.05) & (attn < 0.95))  # not saturated
        return x * attn[:, None, None, :]
    # fc2 is cardinality-major; softmax over radix, then radix-major.
    logits = logits.reshape(batch, cardinality, radix, -1)
    attn = np.exp(logits - logits.max(2, keepdims=True))
    attn = (attn / attn.sum(2, keepdims=True)).transpose(0, 2, 1, 3)
    assert 0.2 < np.mean((attn > 0.05) & (attn < 0.95))  # not saturated
    return (splits * attn.reshape(batch, 1, 1, radix, -1)).sum(3)


@pytest.mark.parametrize("radix,cardinality", [(1, 4), (1, 1), (3, 2)])
def test_split_attention_by_hand(radix, cardinality):
    spec = resnest.Spec(depths=(1,), widths=(24,), cardinality=cardinality,
                        base_width=64, radix=radix, stem_width=8)
    keras.utils.set_random_seed(1)
    model = keras_resnext.build(spec, include_top=False, input_shape=(32, 32, 3))
    randomize_bn_statistics(model)
    for name in ("conv2_block1_2_attn_fc1", "conv2_block1_2_attn_fc2"):
        bias = model.get_layer(name).bias
        bias.assign(np.random.default_rng(2).normal(size=bias.shape).astype("float32"))
    if radix == 1 and cardinality > 1:
        assert isinstance(model.get_layer("conv2_block1_2_attn_fc1"),
                          keras_resnext.GroupConv2D)
    end = "conv2_block1_2_attn_out" if radix > 1 else "conv2_block1_2_attn_scale"
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_2_relu").output,
                                      model.get_layer(end).output])
    images = random_images(2, 32) / 127.5 - 1
    x, out = (np.asarray(t) for t in probe(images, training=False))
    assert x.shape[-1] == 24 * cardinality * radix and out.shape[-1] == 24 * cardinality
    expected = attention_by_hand(
        x, model.get_layer("conv2_block1_2_attn_fc1"),
        model.get_layer("conv2_block1_2_attn_bn"),
        model.get_layer("conv2_block1_2_attn_fc2"), radix=radix, cardinality=cardinality)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_full_size_resnest50d_round_trip_is_exact():
    keras.utils.set_random_seed(3)
    source = keras_resnext.create_model("resnest50d")
    randomize_bn_statistics(source)
    state_dict = convert.keras_to_torch(source)
    assert sum(v.size for k, v in state_dict.items()
               if "running" not in k and "num_batches" not in k) == 27_483_240
    assert state_dict["layer1.0.conv2.conv.weight"].shape == (128, 32, 3, 3)
    assert state_dict["layer4.0.conv2.fc2.bias"].shape == (1024,)

    target = keras_resnext.create_model("resnest50d")
    convert.torch_to_keras(target, state_dict)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("kwargs,match", [
    (dict(radix=0), r"`radix` must be a positive integer. Received: radix=0"),
    (dict(radix=-2), r"Received: radix=-2"),
    (dict(cardinality=0), r"`cardinality` must be a positive integer. "
                          r"Received: cardinality=0"),
    # 18 * 64 // 64 = 18 channels per cardinal group: not divisible by radix 4.
    (dict(widths=(64, 18), radix=4), r"widths\[1\]=18.*cardinality=1, radix=4"),
    (dict(widths=(64, 18), radix=4, cardinality=2),
     r"bottleneck width 36, groups 8"),
    # Attention width make_divisible(48 * 2 / 4, 8, 32) = 32: 3 fc1 groups do not fit.
    (dict(widths=(16, 16), cardinality=3), r"cardinality=3.*attention width 32"),
    (dict(avd_first="yes"), r"Received: avd_first='yes'"),
])
def test_bad_spec(kwargs, match):
    kwargs = dict(dict(depths=(1, 1), widths=(64, 128)), **kwargs)
    with pytest.raises(ValueError, match=match):
        resnest.Spec(**kwargs)


def test_bad_config_names_the_value():
    config = load_fixture_config("resnest_tiny_d")
    config["block_args"]["radix"] = 0
    with pytest.raises(ValueError, match="radix=0"):
        resnest.Spec.from_config(config)


def test_resnext_weights_name_the_first_mismatching_tensor():
    # Same deep stem and shortcut as resnest_tiny_d; the first 1x1 of the
    # first block differs: 16 * 8 / 64 * 4 = 8 channels in ResNeXt, 16 here.
    model, _ = fixture_model("resnest_tiny_d")
    before = [w.numpy().copy() for w in model.weights]
    other = convert.read_safetensors(os.path.join(FIXTURES, "resnext_tiny_d.safetensors"))
    with pytest.raises(ValueError) as info:
        convert.torch_to_keras(model, other)
    message = str(info.value)
    assert "'layer1.0.conv1.weight'" in message
    assert "(8, 16, 1, 1)" in message and "(16, 16, 1, 1)" in message
    # The plain-stem ResNeXt lacks the deep stem's first conv.
    plain = convert.read_safetensors(os.path.join(FIXTURES, "resnext_tiny.safetensors"))
    with pytest.raises(ValueError, match=r"no tensor 'conv1\.0\.weight'"):
        convert.torch_to_keras(model, plain)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_pyramid_and_save_load(tmp_path):
    model = keras_resnext.build(TINY, input_shape=(64, 64, 3), classes=3)
    assert_grouped_convs_are_group_conv2d(model)
    pyramid = keras_resnext.pyramid_model(model)
    outputs = pyramid(random_images(1, 64))
    assert list(outputs) == ["P2", "P3"]
    assert tuple(outputs["P2"].shape) == (1, 16, 16, 32)
    assert tuple(outputs["P3"].shape) == (1, 8, 8, 64)
    restored = assert_save_load_round_trip(model, random_images(2, 64), tmp_path)
    assert isinstance(restored.get_layer("conv2_block1_2_attn_rsoftmax"),
                      resnest.RadixSoftmax)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float32"])
def test_dtype_policies(policy, dtype_policy):
    dtype_policy(policy)
    model = keras_resnext.build(TINY, input_shape=(32, 32, 3), classes=5)
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
    for name in ("conv2_block1_2_conv", "conv2_block1_2_attn_fc2",
                 "conv2_block1_2_attn_rsoftmax", "conv2_block1_2_attn_out"):
        assert model.get_layer(name).compute_dtype == compute, name
    assert model.get_layer("conv2_block1_2_conv").kernel.dtype == "float32"
    out = model.predict(random_images(2, 32), verbose=0)
    assert out.dtype == "float32" and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-3)


def test_zero_init_last_bn_makes_blocks_identity():
    spec = resnest.Spec(depths=(2,), widths=(16,), stem_width=8)
    model = keras_resnext.build(spec, include_top=False, input_shape=(32, 32, 3),
                                zero_init_last_bn=True)
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_out").output,
                                      model.get_layer("conv2_block2_out").output])
    a, b = probe(random_images(1, 32))
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
