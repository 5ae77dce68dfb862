"""Architectures of the ResNeXt family, as data.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
CVPR 2017 (arXiv:1611.05431): Table 1 (ImageNet ResNeXt-50/101), section 5.3 and
appendix A (CIFAR ResNeXt-29). ResNet-D (deep stem, average-pool shortcut) is
He et al., "Bag of Tricks for Image Classification", CVPR 2019, in timm's layout.
"""

import dataclasses

STEM_TYPES = ("", "deep", "cifar")


@dataclasses.dataclass(frozen=True)
class Spec:
    """One architecture: everything the builder needs, nothing else.

    Bottleneck width of a stage is ``floor(width * base_width / 64) * cardinality``
    and its output is ``expansion * width`` (timm/torchvision convention, so
    ResNeXt-50 32x4d has a 128-wide grouped 3x3 in its first stage).

    Attributes:
        depths: blocks per stage.
        widths: "planes" per stage (64, 128, 256, 512 for ImageNet).
        cardinality: groups of the 3x3 convolution (C in the paper).
        base_width: width of one group at ``width == 64`` (d in the paper).
        stem_type: ``""`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3
            convs + max pool, ResNet-D) or ``"cifar"`` (one 3x3/1 conv).
        stem_width: width of a deep stem's first convs (outputs w, w, 2w).
            A plain stem has 64 outputs, as in timm, whatever this says.
        avg_down: average-pool then 1x1 conv on projection shortcuts (ResNet-D).
        expansion: block output width over ``width``.
        default_size: default input height/width.
        description: one line for ``list_models`` and the docs.
    """

    depths: tuple
    widths: tuple = (64, 128, 256, 512)
    cardinality: int = 1
    base_width: int = 64
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    expansion: int = 4
    default_size: int = 224
    description: str = ""

    def __post_init__(self):
        def positive(name, value):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}")

        if len(self.depths) == 0 or len(self.depths) != len(self.widths):
            raise ValueError(
                "`depths` and `widths` must be non-empty and of equal length. "
                f"Received: depths={self.depths}, widths={self.widths}")
        for value in self.depths:
            positive("depths", value)
        for value in self.widths:
            positive("widths", value)
        for name in ("cardinality", "base_width", "stem_width", "expansion",
                     "default_size"):
            positive(name, getattr(self, name))
        if self.stem_type not in STEM_TYPES:
            raise ValueError(
                f"`stem_type` must be one of {STEM_TYPES}. "
                f"Received: stem_type={self.stem_type!r}")
        for width in self.widths:
            group_width = width * self.base_width // 64
            if group_width == 0:
                raise ValueError(
                    "Every stage needs at least one channel per group: "
                    f"width * base_width // 64 must be >= 1. Received: width={width}, "
                    f"base_width={self.base_width}")

    @classmethod
    def from_config(cls, config):
        """Builds a Spec from a dict (e.g. a fixture's JSON), ignoring unknown keys.

        Accepts timm's names too: ``layers`` for depths, ``channels`` for widths.
        """
        aliases = {"layers": "depths", "channels": "widths"}
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in config.items():
            key = aliases.get(key, key)
            if key in fields:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def bottleneck_width(self, stage):
        """Width of the grouped 3x3 convolution of ``stage`` (0-based)."""
        return self.widths[stage] * self.base_width // 64 * self.cardinality

    @property
    def stem_stride(self):
        """Downsampling of the stem (4, or 1 for the CIFAR stem)."""
        return 1 if self.stem_type == "cifar" else 4

    @property
    def min_size(self):
        """Smallest input height/width accepted (keras.applications uses 32)."""
        return 32


VARIANTS = {
    "resnext50_32x4d": Spec(
        depths=(3, 4, 6, 3), cardinality=32, base_width=4,
        description="ResNeXt-50 (32x4d), paper Table 1"),
    "resnext101_32x4d": Spec(
        depths=(3, 4, 23, 3), cardinality=32, base_width=4,
        description="ResNeXt-101 (32x4d), paper Table 3"),
    "resnext101_32x8d": Spec(
        depths=(3, 4, 23, 3), cardinality=32, base_width=8,
        description="ResNeXt-101 (32x8d), torchvision/WSL variant"),
    "resnext101_64x4d": Spec(
        depths=(3, 4, 23, 3), cardinality=64, base_width=4,
        description="ResNeXt-101 (64x4d), paper Table 4"),
    "resnext50d_32x4d": Spec(
        depths=(3, 4, 6, 3), cardinality=32, base_width=4, stem_type="deep",
        stem_width=32, avg_down=True,
        description="ResNeXt-50-D (32x4d): deep stem, average-pool shortcut"),
    "resnext29_8x64d": Spec(
        depths=(3, 3, 3), widths=(64, 128, 256), cardinality=8, base_width=64,
        stem_type="cifar", default_size=32,
        description="ResNeXt-29 (8x64d) for CIFAR, paper Table 7"),
    "resnext29_16x64d": Spec(
        depths=(3, 3, 3), widths=(64, 128, 256), cardinality=16, base_width=64,
        stem_type="cifar", default_size=32,
        description="ResNeXt-29 (16x64d) for CIFAR, paper Table 7"),
    "resnet50": Spec(
        depths=(3, 4, 6, 3), description="ResNet-50 baseline (v1.5), paper Table 1"),
    "resnet101": Spec(
        depths=(3, 4, 23, 3), description="ResNet-101 baseline (v1.5)"),
    "resnet152": Spec(
        depths=(3, 8, 36, 3), description="ResNet-152 baseline (v1.5)"),
}


def get_spec(name):
    """Returns the Spec registered as ``name``.

    Raises:
        ValueError: if ``name`` is not registered; the message lists the names.
    """
    if isinstance(name, Spec):
        return name
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name. Received: name={name!r}. "
            f"Known models: {', '.join(sorted(VARIANTS))}") from None
