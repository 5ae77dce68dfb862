"""Loading weights: one parse of ``weights=``, then the files.

``parse`` turns any ``weights=`` value into a ``Weights``: ``None``,
``"imagenet"`` (the architecture's default tag, always permissively licensed),
a tag (non-commercial tags warn), ``"hf-hub:<repo>[@revision]"``, a
PyTorch-layout ``.safetensors`` (converted by ``convert.py``, cached by
``hub.py``), a Keras ``.weights.h5``, or a ``.pth``/``.pt`` when PyTorch is
installed. Build, classify, evaluate, export and training all parse through
it, so the same value means the same file, registry entry, transform and
license everywhere. The registry itself is ``keras_resnext.pretrained``.
"""

import dataclasses
import importlib.util
import os
import warnings

from keras_resnext import files
from keras_resnext import pretrained

HUB_PREFIX = "hf-hub:"
HUB_FILENAME = "model.safetensors"  # a hub repository's file unless registered
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".safetensors", ".pth", ".pt")


def looks_like_path(weights):
    """Whether a ``weights`` string names a file rather than a tag."""
    return (os.sep in weights or "/" in weights or
            weights.endswith(WEIGHT_FILE_SUFFIXES))


@dataclasses.dataclass(frozen=True)
class Weights:
    """A ``weights=`` value, parsed once (``parse``).

    Attributes:
        kind: ``"none"`` (random initialisation), ``"pretrained"`` (``"imagenet"``
            or a tag), ``"hub"`` (``hf-hub:``) or ``"file"``.
        value: the ``weights=`` value as given (a string, or None).
        path: the local file (kind ``"file"``).
        repo: the hub repository to download from (``"pretrained"``, ``"hub"``).
        revision: the hub revision (``hf-hub:<repo>@<revision>``), or None.
        filename: the file inside ``repo``.
        entry: the registry's ``PretrainedWeights`` (a tag, ``"imagenet"`` or a
            registered hub repository), else None.
    """

    kind: str
    value: str | None = None
    path: str | None = None
    repo: str | None = None
    revision: str | None = None
    filename: str | None = None
    entry: pretrained.PretrainedWeights | None = None

    @property
    def license(self):
        """The registry's license of the weights, or None when unknown to it."""
        return self.entry.license if self.entry else None

    @property
    def pretrained(self):
        """Published ImageNet weights (a tag, ``"imagenet"`` or a hub repository)."""
        return self.kind in ("pretrained", "hub")

    def eval_transform(self, size=None, *, default_size=None):
        """The evaluation transform these weights expect.

        Args:
            size: input size; default the entry's ``test_input_size``, else
                ``default_size``.
            default_size: size used without an entry (the spec's default).

        Returns:
            A ``preprocessing.EvalTransform`` (timm's defaults without an entry).
        """
        if self.entry is None and size is None:
            size = default_size
        return pretrained.eval_transform(self.entry, size)


def _bad_weights(weights, reason=""):
    return ValueError(
        "The `weights` argument should be either "
        "`None` (random initialization), 'imagenet' "
        "(pre-training on ImageNet), "
        "or the path to the weights file to be loaded.  Received: "
        f"weights={weights}{reason}")


def parse(arch, weights, *, registry=None):
    """Parses a ``weights=`` value, cheaply (no download, no file read).

    Bad input fails here, before a model is built.

    Args:
        arch: registered architecture name (or a custom model's name).
        weights: the ``weights=`` argument, or an already parsed ``Weights``.
        registry: ``{arch: {tag: PretrainedWeights}}`` instead of the packaged one.

    Returns:
        A ``Weights``.

    Raises:
        ValueError: not a string/path/None, an unknown tag, ``arch`` without
            pretrained weights, a malformed hub reference, a missing file, an
            unsupported suffix, or a ``.pth`` without PyTorch.
    """
    if isinstance(weights, Weights):
        return weights
    if weights is None:
        return Weights("none")
    if not isinstance(weights, (str, os.PathLike)):
        raise _bad_weights(weights)
    weights = os.fspath(weights)
    if weights.startswith(HUB_PREFIX):
        repo, _, revision = weights[len(HUB_PREFIX):].partition("@")
        if not repo.strip("/"):
            raise ValueError(
                "A hub weights reference is 'hf-hub:<owner>/<repo>[@revision]'. "
                f"Received: weights={weights!r}")
        entry = pretrained.find_hub_entry(repo, registry=registry)
        return Weights("hub", weights, repo=repo, revision=revision or None,
                       filename=entry.filename if entry else HUB_FILENAME, entry=entry)
    if looks_like_path(weights) or os.path.exists(weights):
        if not os.path.isfile(weights):
            raise _bad_weights(weights, " (no such file)")
        if not weights.endswith(WEIGHT_FILE_SUFFIXES):
            raise ValueError(
                f"Unsupported weights file. Accepted suffixes: {WEIGHT_FILE_SUFFIXES}. "
                f"Received: weights={weights!r}")
        if weights.endswith((".pth", ".pt")) and not torch_available():
            raise ValueError(_no_torch_message(weights))
        return Weights("file", weights, path=weights)
    entry = pretrained.get_pretrained(arch, weights, registry=registry)
    return Weights("pretrained", weights, repo=entry.hf_hub_id, filename=entry.filename,
                   entry=entry)


_UNSPECIFIED_LICENSE_WARNED = set()


def warn_license(entry):
    """Warns once about non-commercial or unspecified licenses of ``entry``."""
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
    entry: pretrained.PretrainedWeights | None = None
    from_cache: bool = False
    cache_path: str | None = None


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
    return {k: _torch_to_numpy(k, v, path) for k, v in obj.items() if hasattr(v, "detach")}


def _torch_to_numpy(name, tensor, path):
    """A tensor as a NumPy array; bfloat16 (which NumPy lacks) as float32.

    Raises:
        ValueError: a dtype NumPy cannot hold (a quantized ``qint8`` tensor...),
            naming the tensor and its dtype.
    """
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except TypeError:
        raise ValueError(
            f"Tensor {name!r} of {path!r} has dtype {str(tensor.dtype).replace('torch.', '')}"
            "; weights must be floating point. A quantized checkpoint must be dequantized "
            "to float first.") from None


def load_pytorch_layout(model, path, *, label="model", skip_head=False, cache_dir=None,
                        cache=True, allow_non_finite=False):
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
        allow_non_finite: load NaN/infinite values with a warning
            (``convert.torch_to_keras``).

    Returns:
        A ``LoadResult``.

    Raises:
        ValueError: see ``convert.torch_to_keras`` (a non-float or non-finite
            tensor included).
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
    convert.torch_to_keras(model, state_dict, skip_head=skip_head, source=repr(path),
                           allow_non_finite=allow_non_finite)
    if cache_path:
        files.atomic_save_weights(model, cache_path)
    return LoadResult(path, cache_path=cache_path)


def load_weights(model, arch, weights, *, skip_head=False,
                 cache_dir=None, cache=True, registry=None, allow_non_finite=False):
    """Loads ``weights`` into a freshly built ``model``.

    Args:
        model: the model built for ``arch``.
        arch: registered architecture name (or a custom model's name).
        weights: anything ``parse`` accepts (not None), or its ``Weights``:
            ``"imagenet"`` (the architecture's default tag), a tag,
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
        allow_non_finite: load a PyTorch-layout file holding NaN or infinite
            values, with a warning naming the tensors, instead of refusing it.

    Returns:
        A ``LoadResult``.

    Raises:
        ValueError: anything ``parse`` refuses (a missing file included), a
            corrupt file, a file for another architecture (naming the first
            mismatching tensor and both shapes), a PyTorch-layout tensor that
            is not floating point (naming it and its dtype) or, unless
            ``allow_non_finite``, that holds NaN or infinity.
        FileNotFoundError: the weights must be downloaded and the hub cannot
            be reached (the message says how to fetch it).
    """
    from keras_resnext import hub

    parsed = parse(arch, weights, registry=registry)
    if parsed.kind == "none":
        raise ValueError("`load_weights` needs weights to load. Received: weights=None")
    if parsed.pretrained:
        warn_license(parsed.entry)
        path = hub.download(parsed.repo, parsed.filename, revision=parsed.revision)
        result = load_pytorch_layout(model, path, label=parsed.entry.name if parsed.entry
                                     else arch, skip_head=skip_head, cache_dir=cache_dir,
                                     cache=cache, allow_non_finite=allow_non_finite)
        return dataclasses.replace(result, entry=parsed.entry)
    if parsed.path.endswith(".h5"):
        try:
            model.load_weights(parsed.path)
        except (OSError, ValueError, KeyError) as e:  # h5py's and Keras' errors
            reason = " ".join(str(e).split()) or type(e).__name__
            reason = reason if len(reason) <= 300 else reason[:300] + "..."
            raise ValueError(
                f"Cannot load the Keras weights file {parsed.path!r} into {arch!r}: "
                f"{reason}. Is the file truncated or corrupt, or saved from another "
                "model?") from e
        return LoadResult(parsed.path)
    return load_pytorch_layout(model, parsed.path, label=arch, skip_head=skip_head,
                               cache_dir=cache_dir, cache=cache,
                               allow_non_finite=allow_non_finite)
