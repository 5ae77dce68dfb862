"""The model family: registry, exact sizes, keras.applications behaviour, features."""

import inspect

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import model as model_lib
from keras_resnext import specs

from helpers import TINY_SPEC
from helpers import assert_save_load_round_trip
from helpers import count_trainable
from helpers import random_images
from helpers import RESNET_PARAMS as EXPECTED_PARAMS

# Final feature map (H, W, C) at the default input size.
EXPECTED_FEATURES = {"resnext29_8x64d": (8, 8, 1024), "resnext50_32x4d": (7, 7, 2048)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_counts(name):
    classes = 10 if name.startswith("resnext29") else 1000
    model = keras_resnext.create_model(name, classes=classes)
    assert count_trainable(model) == EXPECTED_PARAMS[name]
    grouped = [l for l in model.layers if isinstance(l, keras_resnext.GroupConv2D)]
    spec = keras_resnext.get_spec(name)
    if spec.cardinality > 1:
        assert len(grouped) == sum(spec.depths)
        assert all(l.groups == spec.cardinality for l in grouped)
        # The grouped 3x3 carries the stride (ResNet v1.5 / the paper).
        assert sorted({l.strides for l in grouped}) == [(1, 1), (2, 2)]
    else:
        assert not grouped
    if name in EXPECTED_FEATURES:
        features = list(keras_resnext.pyramid_model(model).outputs)[-1]
        assert tuple(features.shape[1:]) == EXPECTED_FEATURES[name]


@pytest.mark.slow
def test_resnext50_has_resnet50_complexity():
    """Paper Table 1: ResNeXt-50 (32x4d) keeps ResNet-50's ~4.1 GFLOPs (mult-adds)."""
    rx = keras_resnext.count_macs(keras_resnext.create_model("resnext50_32x4d"))
    rn = keras_resnext.count_macs(keras_resnext.create_model("resnet50"))
    assert 4.0e9 < rn < 4.2e9
    assert abs(rx / rn - 1) < 0.05


def test_factory_signature_matches_keras_applications():
    theirs = list(inspect.signature(keras.applications.ResNet50).parameters)
    ours = list(inspect.signature(keras_resnext.ResNeXt50).parameters)
    assert ours[:len(theirs)] == theirs
    assert inspect.signature(keras_resnext.ResNeXt50).parameters["weights"].default == "imagenet"
    assert inspect.signature(keras_resnext.ResNeXt29_8x64d).parameters["weights"].default is None


BAD_ARGUMENTS = [
    dict(weights="no_such_file.weights.h5"),
    dict(weights="imagenet", classes=10),
    dict(weights="imagenet", input_shape=(192, 192, 3)),
    dict(weights=None, include_top=False, input_shape=(31, 64, 3)),
    dict(weights=None, include_top=False, input_shape=(64, 64)),
    dict(weights="imagenet", include_top=False, input_shape=(64, 64, 1)),
    dict(weights=None, include_top=True, input_shape=(None, None, 3)),
    dict(weights="imagenet", classifier_activation="relu"),
    dict(weights="imagenet", input_shape=[224, 224, 3]),  # Keras compares with a tuple
    dict(weights="imagenet", include_top=False, input_shape=(None, 20, 3)),
]


@pytest.mark.parametrize("kwargs", BAD_ARGUMENTS, ids=lambda kw: ",".join(map(str, kw.items())))
def test_errors_match_keras_applications(kwargs):
    """Same ValueError text as keras.applications.ResNet50 for the same bad input."""
    with pytest.raises(ValueError) as theirs:
        keras.applications.ResNet50(**kwargs)
    with pytest.raises(ValueError) as ours:
        keras_resnext.ResNeXt50(**kwargs)
    expected = str(theirs.value)
    if "no_such_file" in str(kwargs.get("weights")):
        expected += " (no such file)"
    if expected == "`input_shape` must be a tuple of three integers.":
        expected += f" Received: input_shape={kwargs['input_shape']!r}"  # we name the value
    assert str(ours.value) == expected


@pytest.mark.parametrize("call,match", [
    (lambda: keras_resnext.create_model("resnext51"), r"Received: name='resnext51'.*resnext50_32x4d"),
    (lambda: keras_resnext.ResNeXt50(weights=None, include_top=False, pooling="mean"),
     r"`pooling` must be one of \(None, 'avg', 'max'\). Received: pooling='mean'"),
    (lambda: keras_resnext.ResNeXt50(weights="bogus_tag"), r"Valid tags: 'imagenet'"),
    (lambda: keras_resnext.Spec(depths=(1,), widths=(8,), cardinality=0),
     r"cardinality=0"),
    (lambda: keras_resnext.Spec(depths=(1,), widths=(8,), base_width=4),
     r"width=8, base_width=4"),
    (lambda: keras_resnext.Spec(depths=(1, 1), widths=(8,)), r"equal length"),
    (lambda: keras_resnext.Spec(depths=(1,), widths=(8,), stem_type="wide"), r"stem_type='wide'"),
    (lambda: keras_resnext.Spec(depths=3), r"`depths` must be a tuple.*Received: depths=3"),
    (lambda: keras_resnext.ResNeXt50(weights=None, input_shape=(64, 64, 0), include_top=False),
     r"positive integer or None. Received: input_shape=\(64, 64, 0\)"),
] + [
    (lambda classes=classes: keras_resnext.create_model("resnet50", classes=classes),
     rf"`classes` must be a positive integer. Received: classes={classes!r}")
    for classes in (0, -1, 1.5, "10")
])
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_feature_extractor_shapes_and_pooling():
    x = random_images(2, 64)
    base = keras_resnext.build(TINY_SPEC, include_top=False, input_shape=(64, 64, 3))
    assert base(x).shape == (2, 8, 8, 64)
    for pooling, expected_layer in (("avg", "avg_pool"), ("max", "max_pool")):
        model = keras_resnext.build(TINY_SPEC, include_top=False, pooling=pooling)
        assert model.layers[-1].name == expected_layer
        assert model(x).shape == (2, 64)


def test_input_tensor_and_classifier(tmp_path):
    inputs = keras.Input((48, 48, 3))
    model = keras_resnext.build(TINY_SPEC, input_tensor=inputs, classes=7,
                                classifier_activation=None)
    assert model.input is inputs
    logits = model(random_images(3, 48))
    assert logits.shape == (3, 7)
    probs = keras_resnext.build(TINY_SPEC, input_shape=(48, 48, 3), classes=7)(
        random_images(3, 48))
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-5)
    assert_save_load_round_trip(model, random_images(2, 48), tmp_path)


def test_input_channels_warning_matches_keras_applications():
    with pytest.warns(UserWarning) as theirs:
        keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 4))
    with pytest.warns(UserWarning) as ours:
        keras_resnext.build(TINY_SPEC, include_top=False, input_shape=(32, 32, 4))
    expected = [str(w.message) for w in theirs if "input channels" in str(w.message)]
    assert expected and [str(w.message) for w in ours] == expected


@pytest.mark.parametrize("kwargs,expected", [
    (dict(input_shape=None, require_flatten=False, pretrained=False), (3, None, None)),
    (dict(input_shape=None, require_flatten=True, pretrained=True), (3, 32, 32)),
    (dict(input_shape=(1, 40, None), require_flatten=False, pretrained=False), (1, 40, None)),
    (dict(input_shape=(3, 20, 40), require_flatten=False, pretrained=False),
     r"Input size must be at least 32x32; Received: input_shape=\(3, 20, 40\)"),
    (dict(input_shape=(1, 40, 40), require_flatten=False, pretrained=True),
     r"The input must have 3 channels; Received `input_shape=\(1, 40, 40\)`"),
])
def test_obtain_input_shape_channels_first(kwargs, expected):
    """keras.applications' rules with the channel axis first."""
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        if isinstance(expected, str):
            with pytest.raises(ValueError, match=expected):
                model_lib.obtain_input_shape(default_size=32, min_size=32, **kwargs)
        else:
            assert model_lib.obtain_input_shape(default_size=32, min_size=32,
                                                **kwargs) == expected
    finally:
        keras.config.set_image_data_format(previous)


def test_input_tensor_from_a_layer_keeps_its_source_input():
    inputs = keras.Input((48, 48, 3))
    scaled = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    model = keras_resnext.build(TINY_SPEC, input_tensor=scaled, include_top=False)
    assert model.input is inputs and model.layers[1].name == "scale"
    features = keras_resnext.pyramid_model(model)(random_images(1, 48))
    assert {k: tuple(v.shape[1:3]) for k, v in features.items()} == {"P2": (12, 12),
                                                                     "P3": (6, 6)}


def test_producer_names_refuses_a_tensor_of_another_model():
    model = keras_resnext.build(TINY_SPEC, include_top=False, input_shape=(32, 32, 3))
    assert model_lib.producer_names(model, {"P3": model.output}) == {"P3": "conv3_block1_out"}
    with pytest.raises(ValueError, match=r"Received other tensors for: \['P9'\]"):
        model_lib.producer_names(model, {"P9": keras.Input((4,))})


def test_pyramid_model_strides():
    model = keras_resnext.build(
        keras_resnext.Spec(depths=(1, 1, 1, 1), cardinality=2, base_width=8,
                           widths=(8, 8, 16, 16)),
        include_top=False, input_shape=(64, 64, 3))
    features = keras_resnext.pyramid_model(model)(random_images(1, 64))
    assert {k: tuple(v.shape[1:3]) for k, v in features.items()} == {
        "P2": (16, 16), "P3": (8, 8), "P4": (4, 4), "P5": (2, 2)}
    cifar = keras_resnext.build(
        keras_resnext.Spec(depths=(1, 1, 1), widths=(8, 8, 16), cardinality=2,
                           base_width=8, stem_type="cifar"),
        include_top=False, input_shape=(32, 32, 3))
    features = keras_resnext.pyramid_model(cifar)(random_images(1, 32))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "P0": (32, 32, 32), "P1": (16, 16, 32), "P2": (8, 8, 64)}
    with pytest.raises(ValueError, match="Received: model="):
        keras_resnext.pyramid_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_timm_template_rules():
    """Bottleneck width and projection-shortcut placement follow timm/torchvision."""
    spec = keras_resnext.get_spec("resnext50_32x4d")
    assert [spec.bottleneck_width(s) for s in range(4)] == [128, 256, 512, 1024]
    model = keras_resnext.build(TINY_SPEC, include_top=False, input_shape=(32, 32, 3))
    names = {l.name for l in model.layers}
    # widths (8, 16) * 4 = 32, 64 outputs; stem gives 64 -> stage 1 projects (width),
    # stage 2 projects (stride).
    assert {"conv2_block1_0_conv", "conv3_block1_0_conv"} <= names
    deep = keras_resnext.build(
        keras_resnext.Spec(depths=(2, 1), widths=(16, 16), cardinality=4,
                           base_width=16, stem_type="deep", stem_width=8, avg_down=True),
        include_top=False, input_shape=(32, 32, 3))
    names = {l.name for l in deep.layers}
    assert "conv2_block1_0_pool" not in names  # stride 1: no pool, only the conv
    assert {"conv2_block1_0_conv", "conv3_block1_0_pool", "conv1_3_bn"} <= names
    assert "conv2_block2_0_conv" not in names
    assert deep.get_layer("conv1_3_conv").filters == 16


def test_zero_init_last_bn_makes_blocks_identity():
    model = keras_resnext.build(
        keras_resnext.Spec(depths=(2,), widths=(16,), cardinality=4, base_width=16),
        include_top=False, input_shape=(32, 32, 3), zero_init_last_bn=True)
    for layer in model.layers:
        if layer.name.endswith("_3_bn"):
            assert not np.any(layer.gamma.numpy())
    block_in = model.get_layer("conv2_block1_out").output
    block_out = model.get_layer("conv2_block2_out").output
    probe = keras.Model(model.input, [block_in, block_out])
    a, b = probe(random_images(1, 32))
    assert np.abs(np.asarray(a)).max() > 0  # not an all-zero map, equal to anything
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, dtype_policy):
    dtype_policy(policy)
    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=5)
    compute = policy.split("_")[1]
    grouped = [l for l in model.layers if isinstance(l, keras_resnext.GroupConv2D)][0]
    assert grouped.compute_dtype == compute
    assert grouped.kernel.dtype == "float32"
    out = model(random_images(2, 32))
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.sum(np.asarray(out), axis=1), 1.0, rtol=1e-3)


def test_weights_path_loads(tmp_path):
    source = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=3)
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    loaded = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=3,
                                 weights=path)
    x = random_images(2, 32)
    np.testing.assert_array_equal(np.asarray(source(x)), np.asarray(loaded(x)))


def test_spec_from_fixture_config():
    spec = specs.Spec.from_config({"layers": [1, 2], "channels": [16, 32],
                                   "cardinality": 4, "base_width": 8,
                                   "num_classes": 10, "stem_type": ""})
    assert spec.depths == (1, 2) and spec.widths == (16, 32)
    assert spec.bottleneck_width(1) == 16
