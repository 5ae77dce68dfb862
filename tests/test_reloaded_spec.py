"""A model reloaded from ``.keras`` knows its spec: ``ZooModel``'s config carries it."""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_resnext
from keras_resnext import convert
from keras_resnext import families
from keras_resnext.families import res2net
from keras_resnext.families import resnest
from keras_resnext.families import rexnet
from keras_resnext.zoo_model import ZooModel

# One tiny spec per family, at 32 px.
SPECS = {
    "resnet": keras_resnext.Spec(depths=(1, 1), widths=(8, 16), cardinality=2,
                                 base_width=32, default_size=32),
    "resnest": resnest.Spec(depths=(1, 1), widths=(16, 32), stem_width=8, default_size=32),
    "res2net": res2net.Spec(depths=(1, 1), widths=(16, 32), base_width=16, scale=2,
                            stem_type="deep", stem_width=8, avg_down=True,
                            default_size=32),
    "rexnet": rexnet.Spec(width_mult=0.25, depth_mult=0.2, default_size=32),
}


def saved_and_reloaded(spec, tmp_path, **kwargs):
    model = keras_resnext.build(spec, classes=5, input_shape=(32, 32, 3), **kwargs)
    path = tmp_path / "model.keras"
    model.save(path)
    return model, keras.saving.load_model(path), path


@pytest.mark.parametrize("family", sorted(SPECS))
def test_reloaded_model_has_its_spec_and_the_same_weights(family, tmp_path):
    spec = SPECS[family]
    model, loaded, path = saved_and_reloaded(spec, tmp_path)
    assert type(loaded) is ZooModel
    assert families.spec_of(loaded) == spec
    assert type(families.spec_of(loaded)) is type(spec)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The file's config says the family, JSON-ready.
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    assert config["spec"] == families.spec_to_config(spec)
    assert config["spec"]["family"] == family


def test_pyramid_model_and_torch_export_take_a_reloaded_model(tmp_path):
    spec = SPECS["resnest"]
    model, loaded, _ = saved_and_reloaded(spec, tmp_path, include_top=False)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = keras_resnext.pyramid_model(model).predict(x, verbose=0)
    got = keras_resnext.pyramid_model(loaded).predict(x, verbose=0)
    assert list(got) == list(expected) == ["P2", "P3"]
    for level in expected:
        np.testing.assert_allclose(got[level], expected[level], rtol=1e-5, atol=1e-5)

    convert.export_torch_weights(loaded, tmp_path / "reloaded.safetensors")
    convert.export_torch_weights(model, tmp_path / "built.safetensors")
    reloaded = convert.read_safetensors(tmp_path / "reloaded.safetensors")
    built = convert.read_safetensors(tmp_path / "built.safetensors")
    assert sorted(reloaded) == sorted(built)
    for key in built:
        np.testing.assert_array_equal(reloaded[key], built[key])


def test_a_model_without_spec_still_saves_and_reloads(tmp_path):
    model = keras_resnext.build(SPECS["resnet"], classes=5, input_shape=(32, 32, 3))
    pyramid = keras_resnext.pyramid_model(model)  # a ZooModel without a spec
    path = tmp_path / "pyramid.keras"
    pyramid.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is ZooModel and "spec" not in loaded.get_config()
    with pytest.raises(ValueError, match="Expected a model built by keras_resnext.build"):
        families.spec_of(loaded)
