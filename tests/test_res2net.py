"""Res2Net / Res2NeXt: exact sizes, parity with timm, conversion, bad input."""

import json
import os

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext.families import res2net

from helpers import FIXTURES
from helpers import count_trainable
from helpers import fixture_model
from helpers import load_fixture_config
from helpers import random_images
from helpers import RES2NET_PARAMS as EXPECTED_PARAMS

ROOT = os.path.join(os.path.dirname(__file__), "..")


def grouped_convs(model):
    """Every convolution with groups > 1, whatever its class."""
    return [l for l in model.layers
            if isinstance(l, keras.layers.Conv2D) and l.groups > 1]


def test_registry():
    assert set(res2net.VARIANTS) == set(EXPECTED_PARAMS)
    assert res2net.FACTORIES == {
        "Res2Net50": "res2net50_26w_4s", "Res2Net101": "res2net101_26w_4s",
        "Res2NeXt50": "res2next50", "Res2Net50D": "res2net50d",
        "Res2Net101D": "res2net101d"}
    for name in EXPECTED_PARAMS:
        entry = keras_resnext.families.get_entry(name)
        assert entry.family is res2net and entry.spec is res2net.VARIANTS[name]


def test_weights_source_matches_the_variants():
    with open(os.path.join(ROOT, "tools", "weights_sources", "res2net.json"),
              encoding="utf-8") as f:
        sources = json.load(f)
    defaults = sources.pop("_default_tags")
    assert set(sources) == set(defaults) == set(res2net.VARIANTS)
    for model, tags in sources.items():
        assert defaults[model] in tags
        for tag, entry in tags.items():
            assert entry["hf_hub_id"] == f"timm/{model}.{tag}"
            assert entry["license"] == "unknown"
            assert entry["input_size"] == res2net.VARIANTS[model].default_size


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_counts(name):
    model = keras_resnext.create_model(name)
    assert count_trainable(model) == EXPECTED_PARAMS[name]
    spec = res2net.VARIANTS[name]
    grouped = grouped_convs(model)
    if spec.cardinality > 1:
        # One grouped 3x3 per split but the passthrough, in every block.
        assert len(grouped) == sum(spec.depths) * (spec.scale - 1)
        assert all(type(l) is keras_resnext.GroupConv2D for l in grouped)
        assert all(l.groups == spec.cardinality for l in grouped)
    else:
        assert not grouped
    assert tuple(model.get_layer("conv5_block3_out").output.shape[1:]) == (7, 7, 2048)


def test_names_follow_timm():
    plain = res2net.VARIANTS["res2net50_26w_4s"]
    deep = res2net.VARIANTS["res2net50d"]
    assert res2net.torch_prefix("conv2_block1_2_split2_conv", plain) == "layer1.0.convs.2"
    assert res2net.torch_prefix("conv5_block3_2_split0_bn", plain) == "layer4.2.bns.0"
    assert res2net.torch_prefix("conv3_block2_1_bn", plain) == "layer2.1.bn1"
    assert res2net.torch_prefix("conv3_block2_3_conv", plain) == "layer2.1.conv3"
    assert res2net.torch_prefix("conv2_block1_0_bn", plain) == "layer1.0.downsample.1"
    assert res2net.torch_prefix("conv2_block1_0_bn", deep) == "layer1.0.downsample.2"
    assert res2net.torch_prefix("conv1_2_bn", deep) == "conv1.4"
    for no_weights in ("conv2_block1_2_split", "conv2_block1_2_pool",
                       "conv3_block2_2_split1_add", "conv2_block1_2_concat"):
        assert res2net.torch_prefix(no_weights, plain) is None


def test_block_layout_of_the_fixture():
    """Stage blocks (layer1.0 at stride 1 included) pool the passthrough; normal
    blocks add the previous split's output (timm's ``is_first``)."""
    model, _ = fixture_model("res2net_tiny")
    names = {l.name for l in model.layers}
    for block in load_fixture_config("res2net_tiny")["derived"]["blocks"]:
        stage, index = (int(v) for v in block["block"][len("layer"):].split("."))
        prefix = f"conv{stage + 1}_block{index + 1}_2"
        pool = f"{prefix}_pool"
        assert (pool in names) == block["stage_block"], prefix
        if block["stage_block"]:
            assert model.get_layer(pool).strides == (block["conv_stride"],) * 2
        adds = [n for n in names if n.startswith(f"{prefix}_split") and n.endswith("_add")]
        assert len(adds) == (0 if block["stage_block"] else block["scale"] - 2), prefix
        assert model.get_layer(f"{prefix}_split0_conv").filters == block["width"]


def test_split_layer_is_a_named_weightless_registered_layer():
    model, _ = fixture_model("res2next_tiny_d")
    splits = [l for l in model.layers if isinstance(l, res2net.Split)]
    assert [l.name for l in splits] == [
        f"conv{s + 2}_block{b + 1}_2_split"
        for s, depth in enumerate(load_fixture_config("res2next_tiny_d")["layers"])
        for b in range(depth)]
    assert all(not l.weights for l in splits)
    layer = keras.layers.deserialize(keras.layers.serialize(splits[0]))
    assert type(layer) is res2net.Split and layer.get_config() == splits[0].get_config()
    x = random_images(2, 4, channels=6)
    for got, want in zip(layer(x), np.split(x, layer.sections, axis=-1)):
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match=r"size 7 does not divide into 3.*\(None, 4, 4, 7\)"):
        res2net.Split(3, name="s")(keras.Input((4, 4, 7)))


def test_from_config_reads_block_args():
    spec = res2net.Spec.from_config(load_fixture_config("res2next_tiny_d"))
    assert (spec.scale, spec.cardinality, spec.stem_type, spec.avg_down) == (3, 4, "deep", True)
    assert spec.depths == (1, 1, 2, 1) and spec.widths == (16, 32, 48, 64)
    assert [spec.split_width(s) for s in range(4)] == [8, 16, 24, 32]


def test_grouped_convs_are_group_conv2d():
    model, _ = fixture_model("res2next_tiny_d")
    config = load_fixture_config("res2next_tiny_d")
    grouped = grouped_convs(model)
    scale = config["block_args"]["scale"]
    assert len(grouped) == sum(config["layers"]) * (scale - 1)
    assert all(type(l) is keras_resnext.GroupConv2D for l in grouped)
    assert {l.groups for l in grouped} == {config["cardinality"]}
    plain, _ = fixture_model("res2net_tiny")
    assert not grouped_convs(plain)


@pytest.mark.parametrize("kwargs,match", [
    (dict(scale=1), r"`scale`.*>= 2.*Received: scale=1"),
    (dict(scale=0), r"Received: scale=0"),
    (dict(scale=2.0), r"Received: scale=2\.0"),
    (dict(widths=(16, 32), base_width=3),
     r"`base_width` is too small.*base_width >= 4.*width=16, base_width=3"),
    (dict(cardinality=0), r"`cardinality` must be a positive integer. Received: cardinality=0"),
    (dict(cardinality=-2), r"Received: cardinality=-2"),
    (dict(stem_type="cifar"), r"Received: stem_type='cifar'"),
    (dict(widths=(64,)), r"Received: depths=\(1, 1\), widths=\(64,\)"),
    (dict(depths=(1, 0)), r"Received: depths=0"),
])
def test_bad_spec(kwargs, match):
    kwargs = dict(dict(depths=(1, 1), widths=(64, 128)), **kwargs)
    with pytest.raises(ValueError, match=match):
        res2net.Spec(**kwargs)


def test_every_cardinality_divides_the_split_width():
    """The split width is a multiple of the cardinality by construction (timm's
    rule), so an odd cardinality builds and converts."""
    spec = res2net.Spec(depths=(1,), widths=(20,), base_width=26, scale=3,
                        cardinality=3, default_size=32)
    model = keras_resnext.build(spec, include_top=False, input_shape=(32, 32, 3))
    conv = model.get_layer("conv2_block1_2_split0_conv")
    assert (conv.groups, conv.filters, conv.kernel.shape[2]) == (3, 24, 8)
    assert convert.keras_to_torch(model)["layer1.0.convs.0.weight"].shape == (24, 8, 3, 3)


def test_other_architecture_state_dict_is_refused():
    model, _ = fixture_model("res2net_tiny")
    before = [w.numpy().copy() for w in model.weights]
    # The deep stem has conv1.0/conv1.3/conv1.6, no conv1.
    _, deep = fixture_model("res2next_tiny_d")
    with pytest.raises(ValueError, match=r"no tensor 'conv1\.weight'"):
        convert.torch_to_keras(model, deep)
    # A ResNeXt: same stem, then conv2 instead of convs/bns.
    resnext = convert.read_safetensors(os.path.join(FIXTURES, "resnext_tiny.safetensors"))
    with pytest.raises(ValueError) as info:
        convert.torch_to_keras(model, resnext)
    message = str(info.value)
    first = next(n for v, n, t in convert.weight_table(model)
                 if n not in resnext or
                 resnext[n].shape != convert._torch_shape(v.shape, t))
    assert f"'{first}'" in message
    assert first.startswith("layer1.0.")
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_pyramid_model_levels():
    model, _ = fixture_model("res2net_tiny", include_top=False)
    pyramid = keras_resnext.pyramid_model(model)
    outputs = pyramid(random_images(1, 72))
    assert list(outputs) == ["P2", "P3", "P4", "P5"]
    shapes = {k: tuple(v.shape[1:]) for k, v in outputs.items()}
    assert shapes == {"P2": (18, 18, 80), "P3": (9, 9, 128),
                      "P4": (5, 5, 192), "P5": (3, 3, 256)}


def test_zero_init_last_bn_makes_normal_blocks_identity():
    spec = res2net.Spec(depths=(2,), widths=(16,), base_width=26, scale=3,
                        cardinality=2, default_size=32)
    model = keras_resnext.build(spec, include_top=False, input_shape=(32, 32, 3),
                                zero_init_last_bn=True)
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_out").output,
                                      model.get_layer("conv2_block2_out").output])
    a, b = probe(random_images(1, 32))
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float32"])
def test_dtype_policies(policy, dtype_policy):
    dtype_policy(policy)
    model, state_dict = fixture_model("res2next_tiny_d")
    convert.torch_to_keras(model, state_dict)
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
    grouped = grouped_convs(model)[0]
    assert grouped.compute_dtype == compute and grouped.kernel.dtype == "float32"
    io = np.load(os.path.join(FIXTURES, "res2next_tiny_d_io.npz"))
    logits = model.predict(io["input_nhwc"], verbose=0)
    assert logits.dtype == np.float32
    tolerance = 1e-4 if policy == "float32" else 0.1 * np.abs(io["logits"]).max()
    assert np.abs(logits - io["logits"]).max() <= tolerance


@pytest.mark.slow
def test_full_size_res2next50_round_trip_is_exact():
    keras.utils.set_random_seed(5)
    source = keras_resnext.create_model("res2next50")
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in (layer.moving_mean, layer.beta):
                var.assign(rng.normal(size=var.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    state_dict = convert.keras_to_torch(source)
    # timm's state_dict(): per block conv1, 3 convs, conv3 (+ 4 shortcuts);
    # BNs likewise, 5 tensors each; stem conv + BN; fc weight + bias.
    convs = 16 * 5 + 4 + 1
    assert len(state_dict) == convs + convs * 5 + 2
    assert state_dict["layer1.0.conv1.weight"].shape == (128, 64, 1, 1)
    assert state_dict["layer1.0.convs.2.weight"].shape == (32, 4, 3, 3)
    assert state_dict["layer4.2.conv3.weight"].shape == (2048, 1024, 1, 1)
    assert sum(v.size for k, v in state_dict.items()
               if "running" not in k and "num_batches" not in k) == 24_671_464

    target = keras_resnext.create_model("res2next50")
    convert.torch_to_keras(target, state_dict)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
