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
