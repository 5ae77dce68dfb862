"""The named factories: real functions, one per registry entry, each one thin call."""

import ast
import inspect
import os

import keras
import pytest

import keras_resnext
from keras_resnext import applications
from keras_resnext import families
from keras_resnext import model as model_lib
from keras_resnext import pretrained

PACKAGE = os.path.dirname(keras_resnext.__file__)
ENTRIES = {e.factory: e for e in families.registry().values() if e.factory}


def module_tree(name):
    with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
        return ast.parse(f.read())


def test_one_defined_function_per_registry_factory():
    """Static tools see them: ``def`` statements, imported by name, listed in ``__all__``."""
    defined = [n.name for n in module_tree("applications.py").body
               if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert defined == list(ENTRIES) and set(model_lib.FACTORIES) == set(ENTRIES)
    init = module_tree("__init__.py")
    imported = {a.name for n in ast.walk(init) if isinstance(n, ast.ImportFrom)
                and n.module == "keras_resnext.applications" for a in n.names}
    listed = next(ast.literal_eval(n.value) for n in init.body if isinstance(n, ast.Assign)
                  and [t.id for t in n.targets] == ["__all__"])
    assert imported == set(ENTRIES) and set(ENTRIES) <= set(listed)
    for name in ENTRIES:
        assert getattr(keras_resnext, name) is getattr(applications, name)


@pytest.mark.parametrize("name", list(ENTRIES))
def test_signature_and_docstring(name):
    factory, entry = getattr(applications, name), ENTRIES[name]
    parameters = inspect.signature(factory).parameters
    keras_names = list(inspect.signature(keras.applications.ResNet50).parameters)
    assert list(parameters)[:len(keras_names)] == keras_names
    build_parameters = inspect.signature(keras_resnext.build).parameters
    assert list(parameters) == list(build_parameters)[1:]
    expected_weights = "imagenet" if entry.name in pretrained.registry() else None
    for parameter in parameters.values():
        default = (expected_weights if parameter.name == "weights"
                   else build_parameters[parameter.name].default)
        assert parameter.default == default, parameter.name
    doc = inspect.getdoc(factory)
    assert doc.startswith(f"Instantiates {entry.spec.description}")
    assert f"Registered as ``{entry.name}``." in doc
    for section in ("Reference:\n- [", "Args:\n", "Returns:\n"):
        assert section in doc


@pytest.mark.parametrize("name", list(ENTRIES))
def test_each_factory_passes_its_arguments_to_build(name, monkeypatch):
    calls = []
    monkeypatch.setattr(applications, "build", lambda *a, **kw: calls.append((a, kw)))
    arguments = dict(include_top=False, weights=None, input_tensor=None,
                     input_shape=(40, 48, 3), pooling="max", classes=7,
                     classifier_activation=None, name="mine", zero_init_last_bn=True,
                     synchronized_bn=True)
    getattr(applications, name)(**arguments)
    assert calls == [((ENTRIES[name].name,), arguments)]


def test_a_factory_builds_its_registered_model():
    model = keras_resnext.ReXNet100(weights=None, include_top=False, input_shape=(32, 32, 3))
    assert model.name == "rexnet_100"
    assert families.spec_of(model) is ENTRIES["ReXNet100"].spec
