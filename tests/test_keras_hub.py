"""keras-hub integration: backbone, classifier, presets, detectors (keras_resnext.keras_hub).

The checks follow keras-hub's own backbone harness (``run_vision_backbone_test``:
config and serialization round trips, eager call, ``predict``, pyramid levels,
mixed precision, ``.keras`` saving), written here because keras-hub's harness
needs ``grain``.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_resnext
from helpers import FIXTURE_FAMILIES
from helpers import FIXTURES as FIXTURE_DIR
from helpers import RETINANET_SHAPES
from helpers import assert_trained
from helpers import deeplabv3_recipe
from helpers import fixture_spec
from helpers import load_fixture_config
from helpers import random_images
from helpers import retinanet_recipe
from keras_resnext import families

kh = pytest.importorskip("keras_resnext.keras_hub")
import keras_hub  # noqa: E402  (installed with keras_resnext.keras_hub)

FIXTURES = sorted(FIXTURE_FAMILIES)


def pyramid(model, x):
    return {k: np.asarray(v) for k, v in
            keras.Model(model.input, model.pyramid_outputs)(x).items()}


# ---------------------------------------------------------------- backbone


@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_is_build_without_top(name):
    """Same layers, names and weights as keras_resnext.build(include_top=False)."""
    spec = fixture_spec(name)
    backbone = kh.ResNeXtBackbone(spec)
    reference = keras_resnext.build(spec, include_top=False)
    named = [(type(layer), layer.name) for layer in backbone.layers[1:]]
    assert named == [(type(layer), layer.name) for layer in reference.layers[1:]]
    kh.copy_weights(reference, backbone)
    x = random_images(2, 64, seed=1)
    expected = {k: np.asarray(v) for k, v in
                keras_resnext.pyramid_model(reference)(x).items()}
    got = pyramid(backbone, x)
    assert list(got) == list(expected) and got["P3"].shape[1:3] == (8, 8)
    for level in expected:
        np.testing.assert_array_equal(got[level], expected[level])
    np.testing.assert_array_equal(np.asarray(backbone(x)), list(expected.values())[-1])
    assert families.spec_of(backbone) == spec


def test_pyramid_levels_of_an_imagenet_resnext():
    backbone = kh.ResNeXtBackbone(fixture_spec("resnext_tiny"))
    assert isinstance(backbone, keras_hub.models.FeaturePyramidBackbone)
    out = pyramid(backbone, random_images(1, 64))
    assert {k: v.shape[1:3] for k, v in out.items()} == {
        "P2": (16, 16), "P3": (8, 8), "P4": (4, 4), "P5": (2, 2)}


@pytest.mark.parametrize("name", ["resnest_tiny_d", "res2net_tiny", "rexnet_tiny"])
def test_backbone_config_and_serialization_round_trip(name):
    backbone = kh.ResNeXtBackbone(fixture_spec(name), name="b")
    config = backbone.get_config()
    config_json = json.dumps(config, sort_keys=True)
    assert config["spec"]["family"] == FIXTURE_FAMILIES[name]
    revived = kh.ResNeXtBackbone.from_config(json.loads(config_json))
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json
    assert revived.spec == backbone.spec
    serialized = json.dumps(keras.saving.serialize_keras_object(backbone))
    assert json.loads(serialized)["registered_name"] == "keras_resnext>ResNeXtBackbone"
    revived = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert type(revived) is kh.ResNeXtBackbone
    assert json.dumps(revived.get_config(), sort_keys=True) == config_json


def test_backbone_keras_file_round_trip(tmp_path):
    backbone = kh.ResNeXtBackbone(fixture_spec("resnext_tiny_d"))
    x = random_images(2, 64)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is kh.ResNeXtBackbone and restored.spec == backbone.spec
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(backbone(x)))
    assert list(pyramid(restored, x)) == ["P2", "P3", "P4", "P5"]
    # keras-hub's harness also runs the compiled predict, on arrays and tf.data.
    import tensorflow as tf

    eager = np.asarray(backbone(x))  # float32 rounding of a graph vs eager run:
    np.testing.assert_allclose(backbone.predict(x, verbose=0), eager,
                               atol=1e-5 * np.abs(eager).max())
    assert backbone.predict(tf.data.Dataset.from_tensor_slices(x).batch(1),
                            verbose=0).shape == (2, 2, 2, 512)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
def test_dtype_reaches_every_layer(policy):
    backbone = kh.ResNeXtBackbone(fixture_spec("resnest_tiny_d"), dtype=policy)
    policy = keras.dtype_policies.get(policy)
    assert {layer.dtype_policy.name for layer in backbone.layers} == {policy.name}
    assert keras.config.dtype_policy().name == "float32"  # the global policy is back
    out = backbone(random_images(1, 64))
    assert keras.backend.standardize_dtype(out.dtype) == policy.compute_dtype
    assert {w.dtype for w in backbone.weights} == {policy.variable_dtype}
    revived = kh.ResNeXtBackbone.from_config(json.loads(json.dumps(backbone.get_config())))
    assert {layer.dtype_policy.name for layer in revived.layers} == {policy.name}


def test_backbone_accepts_a_name_or_a_config():
    spec = families.get_spec("resnext50_32x4d")
    by_config = kh.ResNeXtBackbone(families.spec_to_config(spec), image_shape=(64, 64, 3))
    assert by_config.spec == spec and by_config.output.shape == (None, 2, 2, 2048)


@pytest.mark.parametrize("image_shape", [(16, 16, 3), (64, 64), (None, None, 1), "224"])
def test_backbone_refuses_a_bad_image_shape(image_shape):
    with pytest.raises(ValueError, match="image_shape"):
        kh.ResNeXtBackbone(fixture_spec("resnext_tiny"), image_shape=image_shape)


def test_backbone_refuses_an_unknown_family():
    config = families.spec_to_config(fixture_spec("resnext_tiny"))
    with pytest.raises(ValueError, match="Known families: resnet, resnest, res2net, rexnet"):
        kh.ResNeXtBackbone({**config, "family": "convnext"})


# ---------------------------------------------------------------- classifier


def fixture_classifier(name, **kwargs):
    """This package's classifier of a fixture (its weights file), and its spec."""
    spec = fixture_spec(name)
    kwargs.setdefault("size", 64)
    built = keras_resnext.build_classifier(
        name, os.path.join(FIXTURE_DIR, f"{name}.safetensors"), spec=spec,
        classes=load_fixture_config(name)["num_classes"], **kwargs)
    return built, spec


def raw_images(n, height=80, width=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), "uint8")


def package_probabilities(built, images):
    """The export's probabilities on this package's eval-transformed images."""
    import tensorflow as tf

    from keras_resnext.export import config as export_config

    cropped = np.stack([built.transform.resize_crop(tf.constant(image)).numpy()
                        for image in images])
    return np.asarray(export_config.probabilities_fn(built.model, built.transform)(cropped))


@pytest.mark.parametrize("name,overrides", [
    ("resnext_tiny", {}),
    ("rexnet_tiny", {"crop_pct": 0.95, "interpolation": "bicubic"}),
])
def test_classifier_predict_equals_package_classifier(name, overrides):
    built, spec = fixture_classifier(name, **overrides)
    task = kh.from_keras_model(built.model, built.transform, spec=spec)
    assert isinstance(task, keras_hub.models.ImageClassifier)
    assert task.preprocessor.image_converter.transform == built.transform
    images = raw_images(3)
    got = task.predict(images, verbose=0)
    expected = package_probabilities(built, images)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-5
    # The classifier's own path: transform(image), then its model.
    one = np.asarray(built.model(built.preprocess(images[0])[None]))
    assert np.abs(got[:1] - one).max() <= 1e-5
    # Logits (a model without softmax stays without): far from saturated.
    logits_model = keras_resnext.build(
        spec, weights=built.weights, classes=load_fixture_config(name)["num_classes"],
        classifier_activation=None,
        input_shape=(built.transform.size, built.transform.size, 3))
    logits_task = kh.from_keras_model(logits_model, built.transform)
    logits = logits_task.predict(images, verbose=0)
    expected = np.stack([np.asarray(logits_model(built.preprocess(image)[None]))[0]
                         for image in images])
    assert np.abs(logits - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 1e-2  # outputs depend on the image


def test_image_converter_is_the_eval_transform():
    import tensorflow as tf

    transform = keras_resnext.EvalTransform(size=48, crop_pct=0.9, interpolation="bicubic",
                                            mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    converter = kh.ResNeXtImageConverter(transform)
    assert converter.image_size == (48, 48)
    images = [raw_images(1, 70, 50, seed=1)[0], raw_images(1, 64, 96, seed=2)[0]]
    expected = np.stack([transform(tf.constant(image)).numpy() for image in images])
    np.testing.assert_allclose(np.asarray(converter(images)), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(converter(images[0])), expected[0], atol=1e-6)
    batch = raw_images(4, 60, 90, seed=3)
    eager = np.asarray(converter(batch))
    # keras-hub's fit/predict run preprocessing inside tf.data.
    mapped = np.concatenate(list(
        tf.data.Dataset.from_tensor_slices(batch).batch(2).map(converter).as_numpy_iterator()))
    np.testing.assert_allclose(mapped, eager, atol=1e-6)
    config = json.loads(json.dumps(converter.get_config()))
    assert config["transform"] == transform.to_dict() and "scale" not in config
    revived = kh.ResNeXtImageConverter.from_config(config)
    assert revived.transform == transform
    revived.image_size = (32, 32)
    assert revived.transform.size == 32 and np.asarray(revived(batch)).shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match="image_size"):
        revived.image_size = (32, 40)
    with pytest.raises(ValueError, match="EvalTransform"):
        kh.ResNeXtImageConverter({"size": 32, "crop": 1})


# ---------------------------------------------------------------- presets

PRESET_FILES = ["config.json", "image_converter.json", "metadata.json", "model.weights.h5",
                "preprocessor.json", "task.json", "task.weights.h5"]


def fixture_preset(name, out_dir):
    """A fixture's weights file as a preset (``to_preset``), and its classifier."""
    built, spec = fixture_classifier(name)
    task = kh.to_preset(name, os.path.join(FIXTURE_DIR, f"{name}.safetensors"), out_dir,
                        spec=spec, classes=load_fixture_config(name)["num_classes"], size=64)
    return task, built


def test_to_preset_writes_a_standard_keras_hub_preset(tmp_path):
    out = tmp_path / "presets" / "resnext_tiny"
    task, built = fixture_preset("resnext_tiny", out)
    assert sorted(os.listdir(out)) == PRESET_FILES
    assert sorted(os.listdir(out.parent)) == ["resnext_tiny"]  # no temporary folder left
    with open(out / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert config["registered_name"] == "keras_resnext>ResNeXtBackbone"
    assert families.spec_from_config(config["config"]["spec"]) == families.spec_of(built.model)
    with open(out / "metadata.json", encoding="utf-8") as f:
        assert json.load(f)["tasks"] == ["ImageClassifier"]
    with open(out / "image_converter.json", encoding="utf-8") as f:
        assert json.load(f)["config"]["transform"] == built.transform.to_dict()
    restored = keras_hub.models.ImageClassifier.from_preset(os.fspath(out))
    assert type(restored) is kh.ResNeXtImageClassifier
    images = raw_images(2, seed=5)
    assert np.abs(restored.predict(images, verbose=0) -
                  package_probabilities(built, images)).max() <= 1e-5


@pytest.mark.parametrize("name", [n for n in FIXTURES if n != "resnext_tiny"])
def test_every_fixture_weights_file_becomes_a_preset(name, tmp_path):
    _, built = fixture_preset(name, tmp_path / name)
    restored = kh.ResNeXtImageClassifier.from_preset(os.fspath(tmp_path / name))
    images = raw_images(2, 70, 64, seed=6)
    # Eagerly (predict's tf.data path is tested above): preprocessor, then the model.
    got = np.asarray(restored(restored.preprocessor(images)))
    assert np.abs(got - package_probabilities(built, images)).max() <= 1e-5


def closed_port_url():
    """An http URL where nothing listens (connections are refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# Runs in a fresh interpreter: only keras_resnext.keras_hub is imported, then
# keras-hub's own base classes load the preset.
_CHILD = r"""
import json, sys
import numpy as np
import keras, keras_hub
import keras_resnext.keras_hub

preset, data, out = sys.argv[1:4]
io = np.load(data)
task = keras_hub.models.ImageClassifier.from_preset(preset)
backbone = keras_hub.models.Backbone.from_preset(preset)
result = dict(backend=keras.config.backend(), task=type(task).__name__,
              backbone=type(backbone).__name__,
              probabilities=task.predict(io["raw"], verbose=0).tolist(),
              features=np.asarray(keras.ops.convert_to_numpy(backbone(io["x"]))).tolist())
if keras.config.backend() == "tensorflow":
    try:  # HF_ENDPOINT refuses connections: the upload stops at the network.
        keras_hub.upload_preset("hf://keras-resnext-test/tiny", preset)
    except Exception as e:
        chain = []
        while e is not None:
            chain.append(type(e).__name__)
            e = e.__cause__ or e.__context__
        result["upload_error"] = chain
json.dump(result, open(out, "w"))
"""


def run_child(preset, raw, x, backend, tmp_path):
    import subprocess
    import sys

    data, out = tmp_path / f"io_{backend}.npz", tmp_path / f"out_{backend}.json"
    np.savez(data, raw=raw, x=x)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "HF_ENDPOINT": closed_port_url(), "HF_TOKEN": "hf_not_a_token",
           "PYTHONPATH": os.pathsep.join(
               [os.path.dirname(os.path.dirname(os.path.abspath(kh.__file__)))] +
               [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.fspath(preset), os.fspath(data),
                           os.fspath(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f)


# A fresh interpreter and keras-hub's tf.data predict: 60-200 s here (2 shared cores).
@pytest.mark.slow
@pytest.mark.parametrize("backend", [
    "tensorflow",
    "jax",
    "torch",
])
def test_preset_loads_in_a_fresh_process_with_keras_hub_base_classes(backend, tmp_path):
    task, built = fixture_preset("resnest_tiny_d", tmp_path / "preset")
    raw, x = raw_images(2, 72, 90, seed=7), random_images(2, 64, seed=8)
    got = run_child(tmp_path / "preset", raw, x, backend, tmp_path)
    assert got["backend"] == backend
    assert (got["task"], got["backbone"]) == ("ResNeXtImageClassifier", "ResNeXtBackbone")
    expected = package_probabilities(built, raw)
    assert np.abs(np.asarray(got["probabilities"]) - expected).max() <= 1e-5
    features = np.asarray(task.backbone(x))
    assert np.abs(np.asarray(got["features"]) - features).max() <= \
        1e-5 * np.abs(features).max()
    if backend == "tensorflow":
        # keras-hub checked the folder, then the Hub call failed at the network.
        assert "ConnectionRefusedError" in got["upload_error"], got["upload_error"]


def test_upload_preset_checks_the_folder_before_the_network(tmp_path):
    fixture_preset("resnext_tiny", tmp_path / "preset")
    with pytest.raises(ValueError, match="Unknown URI"):
        keras_hub.upload_preset("ftp://x/tiny", os.fspath(tmp_path / "preset"))
    os.remove(tmp_path / "preset" / "model.weights.h5")
    with pytest.raises(FileNotFoundError, match="weights file is missing"):
        keras_hub.upload_preset("hf://keras-resnext-test/tiny", os.fspath(tmp_path / "preset"))


# ---------------------------------------------------------------- timm names


def test_every_registered_tag_and_hub_repository_is_a_timm_name():
    from keras_resnext import pretrained

    for arch, tags in pretrained.registry().items():
        assert kh.timm_name(arch) == (arch, "imagenet")
        for tag, entry in tags.items():
            assert kh.timm_name(f"{arch}.{tag}") == (arch, tag)
            assert kh.timm_name(f"hf://{entry.hf_hub_id}") == (arch, tag)
    for other in ["resnet_50_imagenet", "hf://timm/vit_base_patch16_224.augreg_in21k",
                  "kaggle://keras/resnetv1/keras/resnet_50_imagenet"]:
        assert kh.timm_name(other) is None


def hub_cache_with(tmp_path, monkeypatch, repo, source):
    """An offline Hugging Face cache (huggingface_hub's layout) holding ``source``."""
    import shutil

    commit = "c0ffee" + "0" * 34
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(source, root / "snapshots" / commit / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", str(tmp_path / "converted"))


def test_a_pretrained_tag_becomes_a_preset_through_the_converter(tmp_path, monkeypatch):
    import dataclasses

    from keras_resnext import pretrained

    entry = dataclasses.replace(
        pretrained.get_pretrained("resnext50_32x4d", "tv_in1k"), arch="resnext_tiny",
        tag="a_in1k", hf_hub_id="test/resnext_tiny.a_in1k", num_classes=10, input_size=64,
        test_input_size=64, test_crop_pct=0.95, interpolation="bicubic")
    registry = {"resnext_tiny": {"a_in1k": entry}}
    hub_cache_with(tmp_path, monkeypatch, entry.hf_hub_id,
                   os.path.join(FIXTURE_DIR, "resnext_tiny.safetensors"))
    task = kh.to_preset("resnext_tiny", "a_in1k", tmp_path / "preset",
                        spec=fixture_spec("resnext_tiny"), registry=registry)
    assert task.preprocessor.image_converter.transform == entry.eval_transform()
    built, _ = fixture_classifier("resnext_tiny", crop_pct=0.95, interpolation="bicubic")
    images = raw_images(2, seed=9)
    got = np.asarray(task(task.preprocessor(images)))
    assert np.abs(got - package_probabilities(built, images)).max() <= 1e-5
    assert os.listdir(tmp_path / "converted")  # the package's converter ran


def test_timm_name_goes_through_this_package_up_to_the_download(tmp_path, monkeypatch):
    from keras_resnext import pretrained

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="timm/rexnet_100.nav_in1k"):
        kh.ResNeXtImageClassifier.from_preset("rexnet_100.nav_in1k")
    task = kh.ResNeXtImageClassifier.from_preset("hf://timm/rexnet_100.nav_in1k",
                                                 load_weights=False)
    assert task.backbone.spec == families.get_spec("rexnet_100")
    entry = pretrained.get_pretrained("rexnet_100", "nav_in1k")
    assert task.preprocessor.image_converter.transform == entry.eval_transform()
    assert task.output_dense.units == entry.num_classes
    with pytest.raises(ValueError, match="Known architectures"):
        kh.from_timm("vit_base_patch16_224.augreg_in21k")


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def saved_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "preset"
    fixture_preset("resnext_tiny", path)
    return path


def copy_preset(saved_preset, tmp_path):
    import shutil

    return shutil.copytree(saved_preset, tmp_path / "preset")


@pytest.mark.parametrize("missing,cls,named", [
    ("model.weights.h5", "ResNeXtBackbone", "backbone weights"),
    ("config.json", "ResNeXtBackbone", "backbone config"),
    ("task.json", "ResNeXtImageClassifier", "classifier config"),
    ("task.weights.h5", "ResNeXtImageClassifier", "classifier head's weights"),
    ("preprocessor.json", "ResNeXtImageClassifier", "preprocessor"),
])
def test_missing_preset_file_is_named(missing, cls, named, saved_preset, tmp_path):
    preset = copy_preset(saved_preset, tmp_path)
    os.remove(preset / missing)
    with pytest.raises(FileNotFoundError, match=f"has no {missing} \\(the {named}"):
        getattr(kh, cls).from_preset(os.fspath(preset))


def test_missing_preset_folder_and_unreadable_config(tmp_path, saved_preset):
    with pytest.raises(FileNotFoundError, match="Preset folder not found"):
        kh.check_preset(tmp_path / "nothing")
    preset = copy_preset(saved_preset, tmp_path)
    (preset / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*as JSON"):
        kh.ResNeXtBackbone.from_preset(os.fspath(preset))


def test_another_packages_backbone_is_refused(tmp_path):
    other = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block")
    other.save_to_preset(os.fspath(tmp_path / "resnet"))
    with pytest.raises(ValueError) as e:
        kh.ResNeXtBackbone.from_preset(os.fspath(tmp_path / "resnet"))
    message = str(e.value)
    assert "config.json" in message and "'keras_hub>ResNetBackbone'" in message
    assert "expected registered_name 'keras_resnext>ResNeXtBackbone'" in message


def test_unknown_family_in_a_preset_is_named(tmp_path, saved_preset):
    preset = copy_preset(saved_preset, tmp_path)
    with open(preset / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    config["config"]["spec"]["family"] = "convnext"
    (preset / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json.*family='convnext'.*Known families"):
        kh.ResNeXtBackbone.from_preset(os.fspath(preset))
    # keras-hub's base class reaches the same check through from_config.
    with pytest.raises(ValueError, match="family='convnext'.*Known families"):
        keras_hub.models.Backbone.from_preset(os.fspath(preset))


def test_failed_save_leaves_nothing_and_keeps_the_old_preset(tmp_path, saved_preset,
                                                            monkeypatch):
    task = kh.ResNeXtImageClassifier.from_preset(os.fspath(saved_preset))

    def fail(self, preset_dir, max_shard_size=10):
        with open(os.path.join(preset_dir, "model.weights.h5"), "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras_hub.models.Backbone, "save_to_preset", fail)
    with pytest.raises(OSError):
        task.save_to_preset(tmp_path / "new")
    assert os.listdir(tmp_path) == []
    preset = copy_preset(saved_preset, tmp_path)
    before = {n: (preset / n).read_bytes() for n in os.listdir(preset)}
    with pytest.raises(OSError):
        task.save_to_preset(preset)
    assert {n: (preset / n).read_bytes() for n in os.listdir(preset)} == before
    assert os.listdir(tmp_path) == ["preset"]
    monkeypatch.undo()
    (preset / "README.md").write_text("kept")  # keras-hub's saves add to a folder
    task.save_to_preset(preset)
    assert sorted(os.listdir(preset)) == sorted(PRESET_FILES + ["README.md"])
    assert os.listdir(tmp_path) == ["preset"]


def test_missing_extra_is_one_line(tmp_path):
    import subprocess
    import sys

    code = ("import importlib.util, sys\n"
            "find = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n == 'keras_hub' else find(n, *a)\n"
            "from keras_resnext import extras\n"
            "try:\n"
            "    import keras_resnext.keras_hub\n"
            "except extras.MissingExtraError as e:\n"
            "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("The keras-hub integration (keras_resnext.keras_hub) needs "
                               "the [hub] extra (keras-hub not installed)")
    assert "pip install 'keras-resnext[hub]'" in lines[0]


# ---------------------------------------------------------------- export format


def export_cli():
    """``main`` of applications/export.py."""
    import runpy

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return runpy.run_path(os.path.join(repo, "applications", "export.py"))["main"]


def test_export_cli_writes_a_verified_preset(tmp_path, capsys):
    args = ["--spec-json", os.path.join(FIXTURE_DIR, "resnext_tiny.json"),
            "--model-name", "resnext_tiny", "--classes", "10", "--input-size", "64",
            "--weights", os.path.join(FIXTURE_DIR, "resnext_tiny.safetensors"),
            "--formats", "keras_hub", "--out", os.fspath(tmp_path / "out"),
            "--latency-runs", "1"]
    assert export_cli()(args) == 0
    assert "| keras_hub | resnext_tiny-1-keras_hub |" in capsys.readouterr().out
    with open(tmp_path / "out" / "export_report.json", encoding="utf-8") as f:
        report = json.load(f)
    row = {r["format"]: r for r in report["artifacts"]}["keras_hub"]
    assert row["ok"] and row["preprocessor_matches"] and row["max_abs_diff"] <= 1e-5
    assert report["versions"]["keras-hub"] == keras_hub.__version__
    preset = tmp_path / "out" / "resnext_tiny-1-keras_hub"
    assert sorted(os.listdir(preset)) == PRESET_FILES
    assert sorted(os.listdir(tmp_path / "out")) == [
        "export_report.json", "export_report.md", "resnext_tiny-1-keras_hub"]
    task = keras_hub.models.ImageClassifier.from_preset(os.fspath(preset))
    built, _ = fixture_classifier("resnext_tiny")
    images = raw_images(2, seed=11)
    got = np.asarray(task(task.preprocessor(images)))
    assert np.abs(got - package_probabilities(built, images)).max() <= 1e-5
    # The same version again is refused before any work.
    assert export_cli()(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_refuses_a_model_without_spec_before_work(tmp_path):
    from keras_resnext import export as export_lib

    model = keras_resnext.build(fixture_spec("resnext_tiny"), input_shape=(64, 64, 3),
                                classes=10)
    plain = keras.Model(model.input, model.output)  # carries no spec
    with pytest.raises(ValueError, match="model built by keras_resnext.build"):
        export_lib.export(plain, tmp_path / "out", model_name="m", formats=["keras_hub"])
    assert not (tmp_path / "out").exists()
    assert "keras_hub" not in export_lib.DEFAULT_FORMATS


# ---------------------------------------------------------------- downstream


# Compiling the detector's train step dominates: ~60 s here (2 shared cores).
# JAX and PyTorch: tests/test_keras_hub_backends.py.
@pytest.mark.slow
def test_retinanet_on_a_resnext_backbone_trains_and_predicts():
    """docs/keras_hub.md's recipe, on a tiny ResNeXt and 128-pixel images."""
    result = retinanet_recipe(128)
    assert_trained(result)
    assert result["converter_error"] <= 1e-5  # the weights' normalisation
    assert result["shapes"] == RETINANET_SHAPES


@pytest.mark.slow
def test_deeplabv3_on_a_resnext_backbone_trains_and_predicts():
    result = deeplabv3_recipe(64)
    assert_trained(result, loss_decreases=False)  # see deeplabv3_recipe
    assert result["shape"] == [2, 64, 64, 3]
