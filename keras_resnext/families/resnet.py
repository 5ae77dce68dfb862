"""ResNeXt and ResNet: the bottleneck family, as data plus block functions.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
CVPR 2017 (arXiv:1611.05431): Table 1 (ImageNet ResNeXt-50/101), section 5.3 and
appendix A (CIFAR ResNeXt-29). ResNet-D (deep stem, average-pool shortcut) is
He et al., "Bag of Tricks for Image Classification", CVPR 2019, in timm's layout.

The block is the paper's form (c): 1x1, grouped 3x3 with ``groups=cardinality``,
1x1. The stride sits on the grouped 3x3 (ResNet v1.5, as in the paper and in
torchvision/timm), so that converted PyTorch weights give the same numbers.

Layer names are a contract: they follow keras.applications' ResNet
(``conv2_block1_1_conv``), so feature-extraction code written for
``keras.applications.ResNet50`` keeps working, and ``NAME_RULES`` maps them to
timm/torchvision names with a fixed table.
"""

import dataclasses
import re

from keras import layers

from keras_resnext.families import common
from keras_resnext.families import size

NAME = "resnet"
HEAD_PREFIX = "fc"
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
        positive = common.check_positive_int
        common.check_stages(self.depths, self.widths)
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
        """Builds a Spec from timm's arguments, e.g. a fixture's JSON.

        See ``common.spec_from_config``.
        """
        return common.spec_from_config(cls, config)

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


FACTORIES = {
    "ResNeXt50": "resnext50_32x4d",
    "ResNeXt101": "resnext101_32x4d",
    "ResNeXt101_32x8d": "resnext101_32x8d",
    "ResNeXt101_64x4d": "resnext101_64x4d",
    "ResNeXt50D": "resnext50d_32x4d",
    "ResNeXt29_8x64d": "resnext29_8x64d",
    "ResNeXt29_16x64d": "resnext29_16x64d",
    "ResNet50": "resnet50",
    "ResNet101": "resnet101",
    "ResNet152": "resnet152",
}


def projection_shortcut(x, *, out_channels, stride, spec, name, synchronized=False):
    """The block's shortcut: identity, or a 1x1 projection when the stride or
    the width changes (paper option B), after an average pool with
    ``spec.avg_down`` (ResNet-D). Layers ``{name}_0_pool``, ``{name}_0_*``."""
    if stride == 1 and x.shape[common.bn_axis()] == out_channels:
        return x
    if spec.avg_down:
        x = common.avg_down(x, stride=stride, name=f"{name}_0_pool")
        stride = 1
    return common.conv_bn(x, filters=out_channels, kernel_size=1, stride=stride,
                          activation=None, name=f"{name}_0", synchronized=synchronized)


def bottleneck(x, *, stage, stride, spec, name, zero_init_last_bn=False,
               synchronized=False):
    """The ResNeXt block, form (c): 1x1 -> grouped 3x3 (stride here) -> 1x1.

    The shortcut is a projection only when the stride or the width changes
    (paper option B); with ``spec.avg_down`` it is an average pool followed by a
    1x1 convolution (ResNet-D).

    Args:
        x: input tensor.
        stage: 0-based stage index (selects widths from ``spec``).
        stride: stride of the block.
        spec: the architecture ``Spec``.
        name: block prefix, e.g. ``"conv2_block1"``.
        zero_init_last_bn: zero-initialise the last BN scale.
        synchronized: synchronized BatchNorm.

    Returns:
        Output tensor.
    """
    width = spec.bottleneck_width(stage)
    out_channels = spec.widths[stage] * spec.expansion
    common_args = dict(synchronized=synchronized)

    shortcut = projection_shortcut(x, out_channels=out_channels, stride=stride,
                                   spec=spec, name=name, **common_args)

    x = common.conv_bn(x, filters=width, kernel_size=1, name=f"{name}_1", **common_args)
    x = common.conv_bn(x, filters=width, kernel_size=3, stride=stride,
                       groups=spec.cardinality, name=f"{name}_2", **common_args)
    x = common.conv_bn(x, filters=out_channels, kernel_size=1, activation=None,
                       zero_gamma=zero_init_last_bn, name=f"{name}_3", **common_args)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def stem(x, *, spec, synchronized=False):
    """The stem: plain 7x7, deep 3x3 x3 (ResNet-D), or CIFAR 3x3.

    Shared with the families built on timm's ``ResNet`` class (ResNeSt, Res2Net).
    """
    common_args = dict(synchronized=synchronized)
    if spec.stem_type == "cifar":
        return common.conv_bn(x, filters=64, kernel_size=3, name="conv1", **common_args)
    if spec.stem_type == "deep":
        w = spec.stem_width
        x = common.conv_bn(x, filters=w, kernel_size=3, stride=2, name="conv1_1",
                           **common_args)
        x = common.conv_bn(x, filters=w, kernel_size=3, name="conv1_2", **common_args)
        x = common.conv_bn(x, filters=2 * w, kernel_size=3, name="conv1_3", **common_args)
    else:
        x = common.conv_bn(x, filters=64, kernel_size=7, stride=2, name="conv1",
                           **common_args)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def stages(x, *, spec, block_fn, **block_args):
    """Runs ``block_fn`` over the stages of ``spec``; returns the pyramid.

    Stage ``k`` (0-based) is named ``conv{k+2}``; its first block has stride 2
    except in the first stage.

    Returns:
        ``{"P{level}": stage output}``: the stride of level ``l`` is ``2**l``.
    """
    level = spec.stem_stride.bit_length() - 1
    outputs = {}
    for stage, depth in enumerate(spec.depths):
        if stage > 0:
            level += 1
        for block in range(depth):
            x = block_fn(x, stage=stage, stride=2 if stage > 0 and block == 0 else 1,
                         spec=spec, name=f"conv{stage + 2}_block{block + 1}",
                         **block_args)
        outputs[f"P{level}"] = x
    return outputs


def make_features(block_fn, spec_cls, family):
    """A family's ``features`` for timm's ResNet class with ``block_fn`` as its block.

    The stem, then ``stages`` of ``block_fn``; ResNeSt and Res2Net use it too.
    ``spec_cls``/``family``: the family's ``Spec`` class and name (checked).
    """

    def features(inputs, spec, *, zero_init_last_bn=False, synchronized_bn=False):
        """The backbone of ``spec``: ``{"P{level}": stage output}``, deepest last."""
        common.check_spec(spec, spec_cls, family)
        x = stem(inputs, spec=spec, synchronized=synchronized_bn)
        return stages(x, spec=spec, block_fn=block_fn,
                      zero_init_last_bn=zero_init_last_bn, synchronized=synchronized_bn)

    return features


features = make_features(bottleneck, Spec, NAME)



# Sizes without building (``size.Tally``): the layers above, counted.
def tally_stem(tally, x, *, spec):
    """``stem`` counted; returns its output ``size.Shape``."""
    if spec.stem_type == "cifar":
        return tally.conv_bn(x, filters=64, kernel_size=3)
    if spec.stem_type == "deep":
        w = spec.stem_width
        x = tally.conv_bn(x, filters=w, kernel_size=3, stride=2)
        x = tally.conv_bn(x, filters=w, kernel_size=3)
        x = tally.conv_bn(x, filters=2 * w, kernel_size=3)
    else:
        x = tally.conv_bn(x, filters=64, kernel_size=7, stride=2)
    return x.strided(2)


def tally_shortcut(tally, x, *, out_channels, stride):
    """``projection_shortcut`` counted (the average pool has no weights)."""
    if stride != 1 or x.channels != out_channels:
        tally.conv_bn(x, filters=out_channels, kernel_size=1, stride=stride)


def tally_bottleneck(tally, x, *, stage, stride, spec):
    """``bottleneck`` counted."""
    width = spec.bottleneck_width(stage)
    out_channels = spec.widths[stage] * spec.expansion
    tally_shortcut(tally, x, out_channels=out_channels, stride=stride)
    x = tally.conv_bn(x, filters=width, kernel_size=1)
    x = tally.conv_bn(x, filters=width, kernel_size=3, stride=stride,
                      groups=spec.cardinality)
    return tally.conv_bn(x, filters=out_channels, kernel_size=1)


def make_estimate(tally_block):
    """A family's ``estimate`` for timm's ResNet class with ``tally_block`` as its block."""

    def estimate(spec, x, tally):
        """Counts the backbone of ``spec`` on input ``x`` into ``tally``; returns
        the final feature map's ``size.Shape``."""
        x = tally_stem(tally, x, spec=spec)
        for stage, depth in enumerate(spec.depths):
            x = tally.stage(tally_block, x, depth=depth, stride=2 if stage > 0 else 1,
                            stage=stage, spec=spec)
        return x

    return estimate


estimate = make_estimate(tally_bottleneck)

# Keras layer name -> PyTorch module prefix. A template sees the regex groups
# plus ``stage``/``block`` (0-based, as in ``layer{stage+1}.{block}``) and
# ``ds``/``ds_bn`` (indices of the shortcut conv and BN in timm's
# ``downsample`` Sequential: 0/1, or 1/2 after the average pool of ResNet-D,
# which timm keeps as an Identity at stride 1 so the indices do not move).
STEM_RULES = (
    (r"conv1_conv", "conv1"),                  # plain 7x7 stem / CIFAR 3x3 stem
    (r"conv1_bn", "bn1"),
    (r"conv1_1_conv", "conv1.0"),              # deep stem (ResNet-D)
    (r"conv1_1_bn", "conv1.1"),
    (r"conv1_2_conv", "conv1.3"),
    (r"conv1_2_bn", "conv1.4"),
    (r"conv1_3_conv", "conv1.6"),
    (r"conv1_3_bn", "bn1"),
)
SHORTCUT_RULES = (
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_0_conv", "layer{stage}.{block}.downsample.{ds}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_0_bn", "layer{stage}.{block}.downsample.{ds_bn}"),
)
NAME_RULES = STEM_RULES + SHORTCUT_RULES + (
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[123])_conv", "layer{stage}.{block}.conv{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[123])_bn", "layer{stage}.{block}.bn{k}"),
)


def match_rules(rules, layer_name, **fields):
    """The first rule of ``rules`` matching ``layer_name``, formatted; or None.

    A template sees the regex groups, ``fields``, and ``stage``/``block``
    (0-based) when the pattern has groups ``s``/``b`` (``conv{s}_block{b}``).
    """
    for pattern, template in rules:
        match = re.fullmatch(pattern, layer_name)
        if match:
            groups = match.groupdict()
            values = dict(groups, **fields)
            if "s" in groups:
                values.update(stage=int(groups["s"]) - 1, block=int(groups["b"]) - 1)
            return template.format(**values)
    return None


def torch_prefix(layer_name, spec):
    """The PyTorch module prefix of a Keras layer of ``spec``, or None."""
    avg = getattr(spec, "avg_down", False)
    return match_rules(NAME_RULES, layer_name, ds=1 if avg else 0,
                       ds_bn=2 if avg else 1)
