"""One registry: every buildable name and every family's spec JSON go through ``families``."""

import ast
import importlib
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

import keras_resnext
from keras_resnext import convert
from keras_resnext import families
from keras_resnext.families import resnest
from keras_resnext.families import resnet
from keras_resnext.training import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
RESNEST_FIXTURE = os.path.join(FIXTURES, "resnest_tiny_d.json")
RESNEST_WEIGHTS = os.path.join(FIXTURES, "resnest_tiny_d.safetensors")


def load_app(name):
    path = os.path.join(ROOT, "applications", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resnest_spec_json(tmp_path):
    """The ResNeSt fixture as a ``spec_to_config`` file (with its family), plus
    the fixture's ``num_classes`` and ``input_size``."""
    with open(RESNEST_FIXTURE, encoding="utf-8") as f:
        fixture = json.load(f)
    spec = resnest.Spec.from_config(fixture)
    config = {**families.spec_to_config(spec), "num_classes": fixture["num_classes"],
              "input_size": fixture["input_size"]}
    path = tmp_path / "resnest_tiny.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return spec, os.fspath(path)


def test_no_family_module_imports_another():
    for name in families.FAMILY_MODULES:
        module = importlib.import_module(f"keras_resnext.families.{name}")
        with open(module.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = {alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom)
                    and node.module == "keras_resnext.families"
                    for alias in node.names}
        imported |= {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module
                     and node.module.startswith("keras_resnext.families.")}
        assert not imported & set(families.FAMILY_MODULES), (name, imported)


def test_recipe_models_resolve_through_families():
    assert "resnext11_4x4d" in recipes.RECIPE_MODELS  # the digits_quick recipe's model
    every = families.registry(recipes=True)
    published = families.registry()
    assert [n for n, e in every.items() if not e.recipe] == list(published)
    for name, spec in recipes.RECIPE_MODELS.items():
        entry = families.get_entry(name)
        assert entry.recipe and entry.factory is None and entry.spec is spec
        assert families.get_spec(name) is spec
        assert name not in published and name not in keras_resnext.list_models()
        # A recipe spec serialises with its family like any other.
        assert families.spec_from_config(families.spec_to_config(spec)) == spec
    model = keras_resnext.build("resnext11_4x4d", classes=10)
    assert model.name == "resnext11_4x4d"
    assert families.spec_of(model) is recipes.RECIPE_MODELS["resnext11_4x4d"]


def test_unknown_name_lists_recipe_models_too():
    with pytest.raises(ValueError, match="Unknown model name.*resnext11_4x4d"):
        families.get_entry("resnext12")


def test_spec_from_config_reads_a_plain_resnet_config_by_default_family():
    with open(os.path.join(FIXTURES, "resnext_tiny.json"), encoding="utf-8") as f:
        plain = json.load(f)
    spec = families.spec_from_config(plain, default_family="resnet")
    assert type(spec) is resnet.Spec and spec == resnet.Spec.from_config(plain)
    with pytest.raises(ValueError, match="'family' key names its family"):
        families.spec_from_config(plain)
    # A "family" key wins over the default.
    other = families.spec_to_config(resnest.VARIANTS["resnest14d"])
    assert families.spec_from_config(other, default_family="resnet") == \
        resnest.VARIANTS["resnest14d"]


def test_classify_cli_takes_a_resnest_spec_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_RESNEXT_CACHE", os.fspath(tmp_path / "converted"))
    spec, spec_json = resnest_spec_json(tmp_path)
    image_path = tmp_path / "photo.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (90, 80, 3), dtype=np.uint8)).save(image_path)

    code = load_app("classify").main([os.fspath(image_path), "--model", "tiny", "--spec",
                                      spec_json, "--weights", RESNEST_WEIGHTS, "--top", "3",
                                      "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0

    transform = report["eval_transform"]
    model = keras_resnext.build(spec, classes=10,
                                input_shape=(transform["size"], transform["size"], 3))
    convert.torch_to_keras(model, convert.read_safetensors(RESNEST_WEIGHTS))
    x = keras_resnext.eval_transform(np.asarray(Image.open(image_path)),
                                     size=transform["size"], crop_pct=transform["crop_pct"],
                                     interpolation=transform["interpolation"])
    expected = model.predict(keras_resnext.preprocess_input(x)[None], verbose=0)[0]
    top = report["results"][0]["top"]
    assert [row["index"] for row in top] == list(np.argsort(-expected)[:3])
    np.testing.assert_allclose([row["probability"] for row in top],
                               np.sort(expected)[::-1][:3], rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # ~45 s on a 2-core CPU: a SavedModel export, verified
def test_export_cli_takes_a_resnest_spec_json(tmp_path, capsys):
    _, spec_json = resnest_spec_json(tmp_path)
    out = tmp_path / "out"
    code = load_app("export").main([
        "--spec-json", spec_json, "--model-name", "tiny", "--classes", "10",
        "--input-size", "32", "--formats", "saved_model", "--out", os.fspath(out),
        "--latency-runs", "1"])
    assert code == 0, capsys.readouterr().err
    graph = (out / "tiny" / "1" / "saved_model.pb").read_bytes()
    # The split attention's fc1 (a ResNeSt layer) is in the exported graph; a
    # ResNet spec read from the same file would have none.
    assert b"conv2_block1_2_attn_fc1/kernel" in graph
