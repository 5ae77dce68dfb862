"""Model families and the one registry of model names.

A family is one module of this package (``resnet``, ...) that provides:

- ``NAME``: the family's name.
- ``Spec``: a frozen dataclass describing one architecture, validated in
  ``__post_init__``, with ``default_size``, ``min_size`` and ``description``.
- ``VARIANTS``: ``{model_name: Spec(...)}``, the registered architectures.
- ``FACTORIES``: ``{public factory name: model_name}`` (``ResNeXt50``).
- ``RECIPE_VARIANTS`` (optional): ``{model_name: Spec(...)}``, small models of
  the training recipes (``resnext11_4x4d``): buildable by name like the others,
  but not published (no factory, no weights, not in ``list_models()`` or the docs).
- ``features(inputs, spec, *, zero_init_last_bn, synchronized_bn)``: the
  backbone; returns ``{"P{level}": tensor}`` (stride ``2**level``) in
  increasing order, the last being the final feature map.
- ``torch_prefix(layer_name, spec)``: the PyTorch (timm) module prefix of a
  Keras layer, or None; and ``HEAD_PREFIX``, the classifier's prefix.
- ``estimate(spec, x, tally)``: ``features`` counted without building it
  (``size.Tally``: parameters, BN statistics, weighted layers, activations),
  for ``size.check``, which ``build`` runs first.

A spec serialises with its family (``spec_to_config``/``spec_from_config``):
``{"family": "resnest", "depths": [...], ...}``, JSON-ready; a built model
keeps it in its config (``keras_resnext.zoo_model.ZooModel``).

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
        recipe: a training recipe's model (``RECIPE_VARIANTS``), not published.
    """

    name: str
    family: object
    spec: object
    factory: str | None
    recipe: bool = False


@functools.lru_cache(maxsize=None)
def families():
    """``{family name: module}`` of every family."""
    modules = [importlib.import_module(f"keras_resnext.families.{m}")
               for m in FAMILY_MODULES]
    return {module.NAME: module for module in modules}


@functools.lru_cache(maxsize=None)
def registry(*, recipes=False):
    """``{model name: ModelEntry}`` of every registered model, in family order.

    Args:
        recipes: also the training recipes' models (``RECIPE_VARIANTS``, after
            the published ones); by default the published models only.
    """
    out = {}
    for family in families().values():
        factories = {arch: public for public, arch in family.FACTORIES.items()}
        variants = [(family.VARIANTS, False)]
        if recipes:
            variants.append((getattr(family, "RECIPE_VARIANTS", {}), True))
        for table, recipe in variants:
            for name, spec in table.items():
                if name in out:
                    raise RuntimeError(f"Model name {name!r} is registered twice.")
                out[name] = ModelEntry(name, family, spec, factories.get(name), recipe)
    return out


def get_entry(name):
    """The ``ModelEntry`` of a registered name, a recipe model's included.

    Raises:
        ValueError: unknown name; the message lists the registered names.
    """
    known = registry(recipes=True)
    try:
        return known[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name. Received: name={name!r}. "
            f"Known models: {', '.join(sorted(known))}") from None


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


# The key of a spec config that names the spec's family.
FAMILY_KEY = "family"


def spec_to_config(spec):
    """A JSON-ready dict of ``spec``: its family's name and every field.

    ``spec_from_config`` reads it back to an equal spec.

    Args:
        spec: a spec of any family.

    Returns:
        ``{"family": family.NAME, field: value, ...}``; tuples become lists.

    Raises:
        ValueError: ``spec`` is not a spec of any family.
    """
    family = family_of(spec)
    config = {FAMILY_KEY: family.NAME}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        config[field.name] = list(value) if isinstance(value, tuple) else value
    return config


def spec_from_config(config, *, default_family=None):
    """The spec a ``spec_to_config`` dict describes, built by its family.

    The family's ``Spec.from_config`` reads the fields (timm's argument names
    are accepted there too, e.g. a fixture's JSON with a ``"family"`` key).

    Args:
        config: a dict with a ``"family"`` key naming a family.
        default_family: the family of a dict without that key (the CLIs'
            ``--spec-json`` reads a plain ResNet spec with ``"resnet"``);
            None: the key is required.

    Returns:
        A spec of that family, checked by its ``__post_init__``.

    Raises:
        ValueError: ``config`` is not a dict, names no family or an unknown
            one (the message lists the known families), or has bad fields.
    """
    known = ", ".join(families())
    if isinstance(config, dict) and default_family is not None:
        config = {FAMILY_KEY: default_family, **config}
    if not isinstance(config, dict) or FAMILY_KEY not in config:
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f"A spec config is a dict whose {FAMILY_KEY!r} key names its family "
            f"(one of: {known}). Received: {got!r}")
    name = config[FAMILY_KEY]
    family = families().get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(
            f"Unknown model family in a spec config. Received: {FAMILY_KEY}={name!r}. "
            f"Known families: {known}")
    return family.Spec.from_config(
        {key: value for key, value in config.items() if key != FAMILY_KEY})


# The attribute of a built model that holds its spec (set by ``keras_resnext.build``;
# ``ZooModel`` keeps it in its config, so a reloaded ``.keras`` model has it too).
SPEC_ATTR = "_keras_resnext_spec"


def spec_of(model):
    """The spec ``model`` was built from.

    Raises:
        ValueError: ``model`` was not built by ``keras_resnext.build`` (nor
            reloaded from a ``.keras`` file it saved).
    """
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise ValueError(
            "Expected a model built by keras_resnext.build (or a factory), or one "
            "reloaded from a .keras file such a model saved; this one does not carry "
            f"its architecture. Received: model={getattr(model, 'name', model)!r}")
    return spec


def get_spec(name):
    """The spec of a registered name; a spec is returned as it is."""
    if isinstance(name, str):
        return get_entry(name).spec
    family_of(name)
    return name
