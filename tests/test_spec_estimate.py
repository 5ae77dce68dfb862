"""A model's size estimated from its spec (``families.size``), and the refusals."""

import os
import runpy
import time

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import families
from keras_resnext.families import res2net
from keras_resnext.families import rexnet
from keras_resnext.families import size
from keras_resnext.training import loop
from keras_resnext.training import recipes

from helpers import FIXTURE_FAMILIES
from helpers import load_fixture_config
from helpers import expected_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEEP = keras_resnext.Spec(depths=(10000, 1), widths=(64, 128))
WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


# What runs here may set the global dtype policy (a recipe's mixed precision): restore it.
pytestmark = pytest.mark.usefixtures("dtype_policy")


def test_the_estimate_is_the_exact_parameter_count_of_every_registered_model():
    for name, count in expected_params().items():
        classes = 10 if name.startswith("resnext29") else 1000  # as test_model counts them
        estimate = size.estimate(keras_resnext.get_spec(name), classes=classes)
        assert estimate.params == count, name
        assert estimate.layers < size.MAX_LAYERS / 6, name  # the limit is far above all
        assert size.check(keras_resnext.get_spec(name)) == size.estimate(
            keras_resnext.get_spec(name))  # accepted here


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
@pytest.mark.parametrize("input_size", [None, 45])
def test_every_count_equals_the_built_model(name, input_size):
    """Parameters, BN statistics, weighted layers and their outputs, layer by layer."""
    config = load_fixture_config(name)
    spec = families.families()[FIXTURE_FAMILIES[name]].Spec.from_config(config)
    shape = (input_size or config["input_size"],) * 2 + (3,)
    for include_top in (True, False):
        model = keras_resnext.build(spec, input_shape=shape, include_top=include_top,
                                    classes=config["num_classes"])
        estimate = size.estimate(spec, input_shape=shape, classes=config["num_classes"],
                                 include_top=include_top)
        weighted = [layer for layer in model.layers if isinstance(layer, WEIGHTED)]
        assert estimate.params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert estimate.buffers == sum(
            int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert estimate.layers == len(weighted)
        assert estimate.activations == sum(
            int(np.prod(layer.output.shape[1:])) for layer in weighted)


def test_a_spec_of_10000_blocks_is_refused_before_any_layer_is_built():
    first = keras.backend.get_uid("input_layer")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^Refusing to build a model of 30,007 weighted "
                                         r"layers, 704,906,536 parameters \(estimated from "
                                         r"the spec; the limit is 3,000.*depths=\(10000, 1\)"):
        keras_resnext.build(DEEP)
    assert time.perf_counter() - start < 5  # building it takes many minutes
    assert keras.backend.get_uid("input_layer") == first + 1  # no Input layer was made


def test_schedules_too_long_to_count_are_refused_on_their_length():
    with pytest.raises(ValueError, match=r"at least 32,000,000 weighted layers"):
        keras_resnext.build(rexnet.Spec(depth_mult=1e6))
    # 10^6 splits: tallied once and multiplied, not a million times.
    many_splits = res2net.Spec(depths=(1,), widths=(64,), scale=10 ** 6)
    # The stem, the shortcut, two 1x1s, the classifier and 10^6 - 1 split 3x3s.
    assert size.estimate(many_splits).layers == 10 ** 6 + 4
    with pytest.raises(ValueError, match=r"1,000,004 weighted layers"):
        keras_resnext.build(many_splits)


def test_a_model_beyond_the_memory_is_refused_naming_the_estimate():
    wide = keras_resnext.Spec(depths=(1,), widths=(2 ** 17,))  # 9 * 2^34 grouped-3x3 weights
    estimate = size.estimate(wide)
    assert estimate.params > 1.5e11 and estimate.layers == 6
    with pytest.raises(ValueError, match=r"^Refusing to build a model that needs at least "
                                         r"[\d,.]+ GiB for a forward pass at batch 1 "
                                         rf"\({estimate.params:,} parameters, 6 weighted "
                                         r"layers, [\d,]+ activation values at 224x224"):
        keras_resnext.build(wide)
    spec = keras_resnext.get_spec("resnext50_32x4d")
    needed = size.estimate(spec).memory_bytes(batch=32, training=True)
    size.check(spec, batch=32, training=True, memory=needed)
    with pytest.raises(ValueError, match=r"for training at batch 32 \(25,028,904 parameters"):
        size.check(spec, batch=32, training=True, memory=needed - 1)


def test_programs_refuse_in_one_line(tmp_path, capsys):
    spec_json = tmp_path / "deep.json"
    spec_json.write_text('{"layers": [10000, 1], "channels": [64, 128], "num_classes": 10}')
    export = runpy.run_path(os.path.join(ROOT, "applications", "export.py"))["main"]
    classify = runpy.run_path(os.path.join(ROOT, "applications", "classify.py"))["main"]
    image = tmp_path / "x.png"
    image.write_bytes(b"not read: the model is refused first")
    weights = os.path.join(ROOT, "tests", "fixtures", "resnext_tiny.safetensors")
    for main, argv in (
            (export, ["--spec-json", spec_json, "--model-name", "deep", "--out",
                      tmp_path / "out"]),
            (classify, ["--spec", spec_json, "--weights", weights, image])):
        assert main([str(a) for a in argv]) == 2
        out, err = capsys.readouterr()
        assert err.startswith("error: Refusing to build a model of 30,007 weighted layers")
        assert err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_fit_refuses_a_training_step_beyond_the_memory(tmp_path):
    recipe = recipes.get_recipe("digits_quick").replace(image_size=4096, batch_size=1024)
    with pytest.raises(ValueError, match=r"GiB for training at batch 1024 .* at 4096x4096"):
        loop.fit(recipe, loop.RunOptions(model_dir=str(tmp_path / "run"),
                                         strategy="default", verbose=0))
    assert not (tmp_path / "run").exists()
