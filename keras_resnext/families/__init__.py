"""Model families and the one registry of model names.

A family is one module of this package (``resnet``, ...) that provides:

- ``NAME``: the family's name.
- ``Spec``: a frozen dataclass describing one architecture, validated in
  ``__post_init__``, with ``default_size``, ``min_size`` and ``description``.
- ``VARIANTS``: ``{model_name: Spec(...)}``, the registered architectures.
- ``FACTORIES``: ``{public factory name: model_name}`` (``ResNeXt50``).
- ``features(inputs, spec, *, zero_init_last_bn, synchronized_bn)``: the
  backbone; returns ``{"P{level}": tensor}`` (stride ``2**level``) in
  increasing order, the last being the final feature map.
- ``torch_prefix(layer_name, spec)``: the PyTorch (timm) module prefix of a
  Keras layer, or None; and ``HEAD_PREFIX``, the classifier's prefix.
- ``estimate(spec, x, tally)``: ``features`` counted without building it
  (``size.Tally``: parameters, BN statistics, weighted layers, activations),
  for ``size.check``, which ``build`` runs first.

Everything else (``build``, factories, ``list_models``, the weight converter,
CLI choices, docs tables and the test harness) reads this registry.
"""

import dataclasses
import functools
import importlib

# Order is the order of ``list_models()`` groups and of the docs tables.
FAMILY_MODULES = ("resnet", "resnest", "res2net", "rexnet")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model name.

    Attributes:
        name: the registered name (``"resnext50_32x4d"``).
        family: the family module.
        spec: the architecture (an instance of ``family.Spec``).
        factory: the public factory's name (``"ResNeXt50"``), or None.
    """

    name: str
    family: object
    spec: object
    factory: str | None


@functools.lru_cache(maxsize=None)
def families():
    """``{family name: module}`` of every family."""
    modules = [importlib.import_module(f"keras_resnext.families.{m}")
               for m in FAMILY_MODULES]
    return {module.NAME: module for module in modules}


@functools.lru_cache(maxsize=None)
def registry():
    """``{model name: ModelEntry}`` of every registered model, in family order."""
    out = {}
    for family in families().values():
        factories = {arch: public for public, arch in family.FACTORIES.items()}
        for name, spec in family.VARIANTS.items():
            if name in out:
                raise RuntimeError(f"Model name {name!r} is registered twice.")
            out[name] = ModelEntry(name, family, spec, factories.get(name))
    return out


def get_entry(name):
    """The ``ModelEntry`` of a registered name.

    Raises:
        ValueError: unknown name; the message lists the registered names.
    """
    try:
        return registry()[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name. Received: name={name!r}. "
            f"Known models: {', '.join(sorted(registry()))}") from None


def family_of(spec):
    """The family module whose ``Spec`` class ``spec`` is an instance of.

    Raises:
        ValueError: ``spec`` is not a spec of any family.
    """
    for family in families().values():
        if type(spec) is family.Spec:
            return family
    raise ValueError(
        "Expected a registered model name or a family spec "
        f"({', '.join(f'{f.NAME}.Spec' for f in families().values())}). "
        f"Received: spec={spec!r}")


# The attribute of a built model that holds its spec (set by ``keras_resnext.build``).
SPEC_ATTR = "_keras_resnext_spec"


def spec_of(model):
    """The spec ``model`` was built from.

    Raises:
        ValueError: ``model`` was not built by ``keras_resnext.build`` in this
            process (a reloaded ``.keras`` file does not carry its spec).
    """
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise ValueError(
            "Expected a model built by keras_resnext.build (or a factory) in this "
            "process; a model loaded from a file does not carry its architecture. "
            f"Received: model={getattr(model, 'name', model)!r}")
    return spec


def get_spec(name):
    """The spec of a registered name; a spec is returned as it is."""
    if isinstance(name, str):
        return get_entry(name).spec
    family_of(name)
    return name
