"""Pretrained weights: a registry of values with metadata, and ``weights=`` resolution.

Every entry comes from ``data/pretrained.json`` (timm's pretrained configs merged
with the team's catalog): where the file lives, its license, the preprocessing
it was trained and evaluated with, and its reported top-1 with the source.

``load_weights`` is the one place where ``weights=`` is resolved: ``None``,
``"imagenet"`` (the architecture's default tag, always permissively licensed),
a tag (non-commercial tags warn), ``"hf-hub:<repo>"``, a PyTorch-layout
``.safetensors`` (converted by ``convert.py``, cached by ``hub.py``), a Keras
``.weights.h5``, or a ``.pth``/``.pt`` when PyTorch is installed.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import warnings

from keras_resnext import files

HUB_PREFIX = "hf-hub:"
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".safetensors", ".pth", ".pt")
_REGISTRY_PATH = os.path.join(os.path.dirname(__file__), "data", "pretrained.json")


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint and everything needed to use it.

    Attributes:
        arch: registered architecture name.
        tag: timm pretrained tag (e.g. ``"tv2_in1k"``).
        hf_hub_id: Hugging Face hub repository of the safetensors file.
        filename: file name inside the repository.
        license: license of the weights (``cc-by-nc-*`` is non-commercial).
        input_size: training resolution.
        test_input_size: evaluation resolution.
        crop_pct: center-crop fraction at ``input_size``.
        test_crop_pct: center-crop fraction at ``test_input_size``.
        interpolation: resize interpolation (``"bilinear"`` or ``"bicubic"``).
        mean: per-channel mean of 0-1 pixels.
        std: per-channel std of 0-1 pixels.
        num_classes: classifier width.
        top1: reported ImageNet-1k top-1 (%).
        top1_source: where ``top1`` was reported.
    """

    arch: str
    tag: str
    hf_hub_id: str
    filename: str
    license: str
    input_size: int
    test_input_size: int
    crop_pct: float
    test_crop_pct: float
    interpolation: str
    mean: tuple
    std: tuple
    num_classes: int
    top1: float
    top1_source: str

    @property
    def non_commercial(self):
        return self.license.startswith("cc-by-nc")

    @property
    def name(self):
        """timm's full name, ``"<arch>.<tag>"``."""
        return f"{self.arch}.{self.tag}"

    def eval_config(self, test=True):
        """Arguments of ``preprocessing.eval_transform`` for this checkpoint.

        Args:
            test: timm's evaluation setting (``test_input_size``,
                ``test_crop_pct``), else the training resolution and crop.

        Returns:
            ``dict(size=..., crop_pct=..., interpolation=...)``.
        """
        if test:
            return dict(size=self.test_input_size, crop_pct=self.test_crop_pct,
                        interpolation=self.interpolation)
        return dict(size=self.input_size, crop_pct=self.crop_pct,
                    interpolation=self.interpolation)

    def transform(self, image, test=True):
        """This checkpoint's evaluation transform on one 0-255 image (TF ops)."""
        from keras_resnext import preprocessing

        return preprocessing.eval_transform(image, **self.eval_config(test))

    def preprocess(self, x):
        """``preprocess_input`` with this checkpoint's mean and std."""
        from keras_resnext import preprocessing

        return preprocessing.preprocess_input(x, mean=self.mean, std=self.std)


@functools.lru_cache(maxsize=None)
def _raw_registry():
    """``data/pretrained.json`` as read, once per process."""
    with open(_REGISTRY_PATH, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _load_registry():
    """All pretrained entries: ``{arch: {tag: PretrainedWeights}}``."""
    raw = _raw_registry()
    out = {}
    for arch, tags in raw.items():
        if arch.startswith("_"):  # _about, _default_tags
            continue
        out[arch] = {
            tag: PretrainedWeights(
                arch=arch, tag=tag,
                **{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
            for tag, e in tags.items()}
    return out


registry = _load_registry


@functools.lru_cache(maxsize=None)
def default_tags():
    """``{arch: tag}`` that ``weights="imagenet"`` loads (the registry's ``_default_tags``)."""
    return _raw_registry()["_default_tags"]


def default_tag(arch, tags):
    """The tag ``"imagenet"`` means: the registry's default, else the first permissive one."""
    if default_tags().get(arch) in tags:
        return default_tags()[arch]
    permissive = [t for t, e in tags.items() if not e.non_commercial]
    return permissive[0] if permissive else None


def looks_like_path(weights):
    """Whether a ``weights`` string names a file rather than a tag."""
    return (os.sep in weights or "/" in weights or
            weights.endswith(WEIGHT_FILE_SUFFIXES))


def is_pretrained(weights):
    """Whether ``weights`` names published ImageNet weights (not a local file)."""
    if not isinstance(weights, str):
        return False
    return (weights == "imagenet" or weights.startswith(HUB_PREFIX) or
            not looks_like_path(weights) and not os.path.exists(weights))


def get_pretrained(arch, weights="imagenet", *, registry=None):
    """Resolves ``"imagenet"`` or a tag to a ``PretrainedWeights`` entry.

    Args:
        arch: registered architecture name.
        weights: ``"imagenet"`` (the default tag) or a tag.
        registry: ``{arch: {tag: PretrainedWeights}}`` to search instead of
            the packaged one (tests, private checkpoints).

    Returns:
        The registry entry.

    Raises:
        ValueError: the architecture has no pretrained weights, or the tag is
            unknown (the message lists the valid tags).
    """
    table = _load_registry() if registry is None else registry
    tags = table.get(arch)
    if not tags:
        raise ValueError(
            f"No pretrained weights are published for {arch!r}. Received: "
            f"weights={weights!r}. Use weights=None or the path to a weights file. "
            f"Architectures with pretrained weights: {', '.join(sorted(table))}")
    default = default_tag(arch, tags)
    tag = default if weights == "imagenet" else weights
    if tag not in tags:
        raise ValueError(
            f"Unknown pretrained tag for {arch!r}. Received: weights={weights!r}. "
            f"Valid tags: 'imagenet' (= {default!r}), "
            f"{', '.join(repr(t) for t in tags)}")
    return tags[tag]


def torch_available():
    """Whether PyTorch can be imported (needed only for ``.pth``/``.pt`` files)."""
    return importlib.util.find_spec("torch") is not None


def _no_torch_message(path):
    return (
        f"Reading {path!r} needs PyTorch, which is not installed. Install it "
        "(`pip install torch`), or convert the file to safetensors where PyTorch "
        "is installed: `python -c \"import torch, safetensors.torch as st; "
        "st.save_file(torch.load('model.pth', weights_only=True), "
        "'model.safetensors')\"` and pass the .safetensors path.")


def validate_weights_argument(weights, arch, *, registry=None):
    """Raises ``ValueError`` for a ``weights=`` value that cannot be loaded.

    Cheap checks only (no download, no file read), so that bad input fails
    before a model is built.

    Args:
        weights: the ``weights=`` argument.
        arch: registered architecture name.
        registry: as in ``get_pretrained``.
    """
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "The `weights` argument should be either "
            "`None` (random initialization), 'imagenet' "
            "(pre-training on ImageNet), "
            "or the path to the weights file to be loaded.  Received: "
            f"weights={weights}")
    weights = os.fspath(weights)
    if weights.startswith(HUB_PREFIX):
        if not weights[len(HUB_PREFIX):].strip("/@"):
            raise ValueError(
                "A hub weights reference is 'hf-hub:<owner>/<repo>[@revision]'. "
                f"Received: weights={weights!r}")
        return
    if looks_like_path(weights) or os.path.exists(weights):
        if not os.path.isfile(weights):
            raise ValueError(
                "The `weights` argument should be either "
                "`None` (random initialization), 'imagenet' "
                "(pre-training on ImageNet), "
                "or the path to the weights file to be loaded.  Received: "
                f"weights={weights} (no such file)")
        if not weights.endswith(WEIGHT_FILE_SUFFIXES):
            raise ValueError(
                f"Unsupported weights file. Accepted suffixes: {WEIGHT_FILE_SUFFIXES}. "
                f"Received: weights={weights!r}")
        if weights.endswith((".pth", ".pt")) and not torch_available():
            raise ValueError(_no_torch_message(weights))
        return
    get_pretrained(arch, weights, registry=registry)


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What ``load_weights`` loaded.

    Attributes:
        source: the file read (a hub cache path for pretrained weights).
        entry: the ``PretrainedWeights`` entry, if the weights are registered.
        from_cache: converted weights came from the cache (no conversion).
        cache_path: the converted ``.weights.h5`` used or written (or None).
    """

    source: str
    entry: PretrainedWeights | None = None
    from_cache: bool = False
    cache_path: str | None = None


def entry_for(arch, weights, *, registry=None):
    """The registry entry a ``weights=`` value names, the one resolver of it.

    Build, classify, evaluate, export and training all ask this function, so a
    tag, ``"imagenet"`` and a registered ``hf-hub:`` repository give the same
    entry (and so the same evaluation transform) everywhere.

    Args:
        arch: registered architecture name.
        weights: the ``weights=`` value.
        registry: as in ``get_pretrained``.

    Returns:
        The ``PretrainedWeights`` of a tag, ``"imagenet"`` or a registered
        ``hf-hub:`` repository; None for files and unregistered repositories.

    Raises:
        ValueError: an unknown tag, or ``arch`` has no pretrained weights.
    """
    table = _load_registry() if registry is None else registry
    if not (isinstance(weights, str) and is_pretrained(weights)):
        return None
    if weights.startswith(HUB_PREFIX):
        return _find_entry(weights[len(HUB_PREFIX):].partition("@")[0], table)
    return get_pretrained(arch, weights, registry=table)


def _find_entry(hf_hub_id, table):
    for tags in table.values():
        for entry in tags.values():
            if entry.hf_hub_id == hf_hub_id:
                return entry
    return None


_UNSPECIFIED_LICENSE_WARNED = set()


def _warn_license(entry):
    if entry is None:
        return
    if entry.non_commercial:
        warnings.warn(
            f"Weights {entry.name} are licensed {entry.license}: non-commercial "
            f"use only (hub repository {entry.hf_hub_id}).", UserWarning, stacklevel=3)
    elif entry.license == "unknown" and entry.name not in _UNSPECIFIED_LICENSE_WARNED:
        _UNSPECIFIED_LICENSE_WARNED.add(entry.name)
        warnings.warn(
            f"Weights {entry.name} have no license specified upstream (hub repository "
            f"{entry.hf_hub_id}): check the original release's terms before use.",
            UserWarning, stacklevel=3)


def read_torch_file(path):
    """Reads a ``.pth``/``.pt`` state dict with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: PyTorch is not installed, or the file is unreadable.
    """
    if not torch_available():
        raise ValueError(_no_torch_message(path))
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of any kind
        raise ValueError(
            f"Cannot read {path!r} with torch.load(weights_only=True) (plain state "
            f"dicts only; keras_resnext never unpickles code from a file): "
            f"{str(e).splitlines()[0]}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path!r} holds a {type(obj).__name__}, not a state dict (name -> tensor).")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def load_pytorch_layout(model, path, *, label="model", skip_head=False, cache_dir=None,
                        cache=True):
    """Loads a PyTorch-layout file into ``model`` through the converted cache.

    The first load converts (``convert.torch_to_keras``) and writes the Keras
    weights atomically to the cache; later loads of the same file into the
    same layout read the cache. A file that cannot be read or does not fit
    leaves nothing in the cache.

    Args:
        model: the Keras model.
        path: ``.safetensors`` (or ``.pth``/``.pt`` with PyTorch installed).
        label: readable prefix of the cache file name (the architecture).
        skip_head: keep the model's classifier (never cached).
        cache_dir: directory of converted weights (``hub.converted_cache_dir()``).
        cache: read and write the cache.

    Returns:
        A ``LoadResult``.
    """
    from keras_resnext import convert
    from keras_resnext import hub

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such weights file. Received: weights={path!r}")
    # A kept (randomly initialised) classifier is never cached.
    cache = cache and not (skip_head and any(
        layer.name == convert.HEAD_LAYER for layer in model.layers))
    cache_path = (hub.converted_cache_path(model, path, cache_dir=cache_dir, label=label)
                  if cache else None)
    if cache_path and os.path.isfile(cache_path):
        try:
            model.load_weights(cache_path)
            return LoadResult(path, from_cache=True, cache_path=cache_path)
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            warnings.warn(f"Ignoring unreadable converted weights {cache_path!r}: {e}")
            os.remove(cache_path)
    if path.endswith((".pth", ".pt")):
        state_dict = read_torch_file(path)
    else:
        state_dict = convert.read_safetensors(path)
    convert.torch_to_keras(model, state_dict, skip_head=skip_head, source=repr(path))
    if cache_path:
        files.atomic_save_weights(model, cache_path)
    return LoadResult(path, cache_path=cache_path)


def load_weights(model, arch, weights, *, skip_head=False,
                 cache_dir=None, cache=True, registry=None):
    """Loads ``weights`` into a freshly built ``model``.

    Args:
        model: the model built for ``arch``.
        arch: registered architecture name (or a custom model's name).
        weights: ``"imagenet"`` (the architecture's default tag), a tag,
            ``"hf-hub:<repo>[@revision]"``, a ``.safetensors`` file in PyTorch
            layout, a Keras ``.weights.h5`` file, or a ``.pth``/``.pt`` file
            (PyTorch installed).
        skip_head: keep the model's own classifier (e.g. 10 classes) and load
            everything else.
        cache_dir: directory of converted weights (default
            ``$KERAS_RESNEXT_CACHE`` or ``~/.cache/keras_resnext``).
        cache: read/write converted weights there (False: convert every
            time, write nothing; e.g. a read-only home).
        registry: ``{arch: {tag: PretrainedWeights}}`` instead of the packaged one.

    Returns:
        A ``LoadResult``.

    Raises:
        ValueError: unknown tag, no weights for ``arch``, unsupported or
            corrupt file, or a file for another architecture (naming the first
            mismatching tensor and both shapes).
        FileNotFoundError: the file is missing, or it must be downloaded and
            the hub cannot be reached (the message says how to fetch it).
    """
    from keras_resnext import hub

    table = _load_registry() if registry is None else registry
    weights = os.fspath(weights)
    if weights.startswith(HUB_PREFIX):
        repo, _, revision = weights[len(HUB_PREFIX):].partition("@")
        entry = entry_for(arch, weights, registry=table)
        _warn_license(entry)
        path = hub.download(repo, entry.filename if entry else hub.DEFAULT_FILENAME,
                            revision=revision or None)
        result = load_pytorch_layout(model, path, label=entry.name if entry else arch,
                                     skip_head=skip_head, cache_dir=cache_dir,
                                     cache=cache)
        return dataclasses.replace(result, entry=entry)
    if is_pretrained(weights):
        entry = entry_for(arch, weights, registry=table)
        _warn_license(entry)
        path = hub.download(entry.hf_hub_id, entry.filename)
        result = load_pytorch_layout(model, path, label=entry.name,
                                     skip_head=skip_head, cache_dir=cache_dir,
                                     cache=cache)
        return dataclasses.replace(result, entry=entry)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"No such weights file. Received: weights={weights!r}")
    if weights.endswith(".h5"):
        try:
            model.load_weights(weights)
        except (OSError, ValueError, KeyError) as e:  # h5py's and Keras' errors
            reason = " ".join(str(e).split()) or type(e).__name__
            reason = reason if len(reason) <= 300 else reason[:300] + "..."
            raise ValueError(
                f"Cannot load the Keras weights file {weights!r} into {arch!r}: {reason}. "
                "Is the file truncated or corrupt, or saved from another model?") from e
        return LoadResult(weights)
    if weights.endswith((".safetensors", ".pth", ".pt")):
        return load_pytorch_layout(model, weights, label=arch, skip_head=skip_head,
                                   cache_dir=cache_dir, cache=cache)
    raise ValueError(
        f"Unsupported weights file. Accepted suffixes: {WEIGHT_FILE_SUFFIXES}. "
        f"Received: weights={weights!r}")


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A softmax classifier with weights and the preprocessing they expect.

    Attributes:
        model: ``keras.Model`` mapping preprocessed ``(N, size, size, 3)``
            images to class probabilities.
        eval_config: ``preprocessing.eval_transform`` arguments.
        mean: normalisation mean of 0-1 pixels.
        std: normalisation std of 0-1 pixels.
        labels: one ``(id, name)`` per class (WordNet ids for ImageNet).
        loaded: the ``LoadResult`` of the weights.
    """

    model: object
    eval_config: dict
    mean: tuple
    std: tuple
    labels: list
    loaded: LoadResult

    def preprocess(self, image):
        """One decoded 0-255 ``(H, W, 3)`` image -> the model's input (TF ops)."""
        from keras_resnext import preprocessing

        image = preprocessing.eval_transform(image, **self.eval_config)
        return preprocessing.preprocess_input(image, mean=self.mean, std=self.std)


def build_classifier(arch, weights="imagenet", *, spec=None, classes=None, size=None,
                     crop_pct=None, interpolation=None, labels=None, registry=None):
    """Builds a model for ``arch``, loads ``weights``, and picks its eval transform.

    The transform is the one of the weights' tag (timm's test size and crop);
    explicit ``size``/``crop_pct``/``interpolation`` override it; weights with
    no tag (a local file) use timm's defaults (the spec's default size, crop
    0.875, bilinear). The model is built at the transform's size, which may
    differ from 224 (global pooling makes the classifier size-independent).

    Args:
        arch: registered architecture name (also the label of a custom spec).
        weights: anything ``load_weights`` accepts.
        spec: a ``Spec`` to build instead of the registered ``arch``.
        classes: classifier width (default 1000).
        size: evaluation size override.
        crop_pct: center-crop fraction override.
        interpolation: resize interpolation override.
        labels: class names (default: ImageNet names for 1000 classes, else
            ``class_<i>``).
        registry: as in ``load_weights``.

    Returns:
        A ``Classifier``.

    Raises:
        ValueError: bad arguments, unknown tag, or weights that do not fit.
        FileNotFoundError: missing file, or no network and no cached download.
    """
    from keras_resnext import model as model_lib
    from keras_resnext import preprocessing
    from keras_resnext import specs as specs_lib

    spec = spec or specs_lib.get_spec(arch)
    classes = 1000 if classes is None else classes
    validate_weights_argument(weights, arch, registry=registry)
    entry = entry_for(arch, weights, registry=registry)
    config = entry.eval_config() if entry else dict(
        size=spec.default_size, crop_pct=0.875, interpolation="bilinear")
    overrides = dict(size=size, crop_pct=crop_pct, interpolation=interpolation)
    config.update({k: v for k, v in overrides.items() if v is not None})
    preprocessing.validate_eval_transform_args(**config)
    if labels is None:
        labels = (preprocessing.imagenet_classes() if classes == 1000 else
                  [(str(i), f"class_{i}") for i in range(classes)])
    if len(labels) != classes:
        raise ValueError(f"Got {len(labels)} labels for {classes} classes.")
    model = model_lib.build(spec, weights=None, classes=classes, name=arch,
                            input_shape=(config["size"], config["size"], 3),
                            classifier_activation="softmax")
    loaded = load_weights(model, arch, weights, registry=registry)
    mean = entry.mean if entry else preprocessing.IMAGENET_MEAN
    std = entry.std if entry else preprocessing.IMAGENET_STD
    return Classifier(model, config, tuple(mean), tuple(std), list(labels), loaded)
