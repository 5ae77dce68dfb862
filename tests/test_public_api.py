"""The package uses public Keras API only (STYLE.md rule 11)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "keras_resnext")
# Attributes of Keras tensors and operations that only Keras' internals use.
PRIVATE_KERAS_ATTRIBUTES = {"_keras_history", "_inbound_nodes", "_outbound_nodes",
                            "_operations", "_keras_mask"}


def package_sources():
    for root, _, files in os.walk(PACKAGE):
        for file in sorted(files):
            if file.endswith(".py"):
                yield os.path.relpath(os.path.join(root, file), PACKAGE)


def private_keras_uses(source):
    """``"line: what"`` for every ``keras.src`` import and private Keras attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        found += [f"{node.lineno}: import {m}" for m in modules
                  if m == "keras.src" or m.startswith("keras.src.")]
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_KERAS_ATTRIBUTES:
            found.append(f"{node.lineno}: .{node.attr}")
        if (isinstance(node, ast.Attribute) and node.attr == "src"
                and isinstance(node.value, ast.Name) and node.value.id == "keras"):
            found.append(f"{node.lineno}: keras.src")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


@pytest.mark.parametrize("path", sorted(package_sources()))
def test_no_private_keras_api(path):
    with open(os.path.join(PACKAGE, path), encoding="utf-8") as f:
        assert private_keras_uses(f.read()) == []


def test_the_scan_finds_private_uses():
    source = ("from keras.src.ops import numpy\nimport keras.src.applications\n"
              "name = t._keras_history.operation.name\nx = keras.src.ops\n")
    assert private_keras_uses(source) == [
        "1: import keras.src.ops", "2: import keras.src.applications",
        "3: ._keras_history", "4: keras.src"]


def run_python(code):
    """Runs ``code`` in a fresh interpreter with this tree first on the path."""
    import subprocess
    import sys

    root = os.path.dirname(PACKAGE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_importing_the_cli_starts_no_tensorflow():
    assert run_python(
        "import sys\nimport keras_resnext.cli\nfrom keras_resnext import cli\n"
        "import keras_resnext\nkeras_resnext.families\n"
        "print(cli.__name__, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    ) == ["keras_resnext.cli", "False", "False"]


def test_keras_loads_a_saved_model_after_importing_the_package(tmp_path):
    """The package's layers are registered when Keras is imported first (or once
    any public name is used), as ``keras.saving.load_model`` needs."""
    import keras_resnext
    from helpers import TINY_SPEC

    path = str(tmp_path / "tiny.keras")
    keras_resnext.build(TINY_SPEC, include_top=False, input_shape=(32, 32, 3)).save(path)
    load = (f"m = keras.saving.load_model({path!r})\n"
            "print(type(m.get_layer('conv2_block1_2_conv')).__name__)")
    for prelude in ("import keras\nimport keras_resnext\n",
                    "import keras_resnext\nkeras_resnext.build\nimport keras\n"):
        assert run_python(prelude + load) == ["GroupConv2D"]


def test_every_public_name_is_its_modules_and_known_to_static_tools():
    import importlib

    import keras_resnext

    with open(os.path.join(PACKAGE, "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    guarded = next(n for n in tree.body if isinstance(n, ast.If)
                   and getattr(n.test, "id", None) == "TYPE_CHECKING")
    imports = [(n.module, a.name) for n in guarded.body for a in n.names]
    assert sorted(name for _, name in imports) == sorted(keras_resnext.__all__)
    for module, name in imports:
        assert getattr(keras_resnext, name) is getattr(importlib.import_module(module), name)
    assert set(keras_resnext.__all__) <= set(dir(keras_resnext))
