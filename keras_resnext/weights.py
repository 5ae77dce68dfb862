"""Pretrained weights: a registry of values with metadata, and ``weights=`` resolution.

Every entry comes from ``data/pretrained.json`` (timm's pretrained configs merged
with the team's catalog): where the file lives, its license, the preprocessing
it was trained and evaluated with, and its reported top-1 with the source.
"""

import dataclasses
import functools
import json
import os

DEFAULT_TAGS = {
    # The best permissively licensed tag of each architecture.
    "resnext50_32x4d": "tv2_in1k",
    "resnext101_32x4d": "gluon_in1k",
    "resnext101_32x8d": "tv2_in1k",
    "resnext101_64x4d": "tv_in1k",
    "resnext50d_32x4d": "bt_in1k",
    "resnet50": "tv2_in1k",
    "resnet101": "tv2_in1k",
    "resnet152": "tv2_in1k",
}
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


@functools.lru_cache(maxsize=None)
def registry():
    """All pretrained entries: ``{arch: {tag: PretrainedWeights}}``."""
    with open(_REGISTRY_PATH, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for arch, tags in raw.items():
        if arch.startswith("_"):
            continue
        out[arch] = {
            tag: PretrainedWeights(
                arch=arch, tag=tag,
                **{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
            for tag, e in tags.items()}
    return out


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


def get_pretrained(arch, weights="imagenet"):
    """Resolves ``"imagenet"`` or a tag to a ``PretrainedWeights`` entry.

    Args:
        arch: registered architecture name.
        weights: ``"imagenet"`` (the default tag) or a tag.

    Returns:
        The registry entry.

    Raises:
        ValueError: the architecture has no pretrained weights, or the tag is
            unknown (the message lists the valid tags).
    """
    tags = registry().get(arch)
    if not tags:
        raise ValueError(
            f"No pretrained weights are published for {arch!r}; use weights=None "
            "or the path to a weights file. Architectures with pretrained weights: "
            f"{', '.join(sorted(registry()))}")
    tag = DEFAULT_TAGS[arch] if weights == "imagenet" else weights
    if tag not in tags:
        raise ValueError(
            f"Unknown pretrained tag for {arch!r}. Received: weights={weights!r}. "
            f"Valid tags: 'imagenet' (= {DEFAULT_TAGS[arch]!r}), "
            f"{', '.join(repr(t) for t in tags)}")
    return tags[tag]


def validate_weights_argument(weights, arch):
    """Raises ``ValueError`` for a ``weights=`` value that cannot be loaded.

    Cheap checks only (no download, no file read), so that bad input fails
    before a model is built.
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
        return
    if looks_like_path(weights):
        if not os.path.exists(weights):
            raise ValueError(
                "The `weights` argument should be either "
                "`None` (random initialization), 'imagenet' "
                "(pre-training on ImageNet), "
                "or the path to the weights file to be loaded.  Received: "
                f"weights={weights} (no such file)")
        return
    if os.path.exists(weights):
        return
    get_pretrained(arch, weights)


def load_weights(model, arch, weights, *, include_top=True):
    """Loads ``weights`` into a freshly built ``model``.

    Args:
        model: the model built for ``arch``.
        arch: registered architecture name (or a custom model's name).
        weights: ``"imagenet"``, a tag, ``"hf-hub:<repo>"``, or a file path.
        include_top: whether ``model`` has its classifier.

    Raises:
        NotImplementedError: pretrained downloads are not available yet.
        ValueError: the file does not fit the model.
    """
    del include_top  # used by the PyTorch-layout converter
    weights = os.fspath(weights)
    if is_pretrained(weights):
        raise NotImplementedError(
            f"weights={weights!r}: pretrained ImageNet weights are not available in "
            "this version. Use weights=None or the path to a .weights.h5 file.")
    if not weights.endswith(".h5"):
        raise ValueError(
            "Unsupported weights file. Accepted: a Keras '.weights.h5' file. "
            f"Received: weights={weights!r}")
    model.load_weights(weights)
