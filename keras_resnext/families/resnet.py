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

from keras import layers

from keras_resnext.families import common

NAME = "resnet"
HEAD_PREFIX = "fc"
STEM_TYPES = common.ResNetSpec.STEM_TYPES


@dataclasses.dataclass(frozen=True)
class Spec(common.ResNetSpec):
    """One architecture: ``common.ResNetSpec`` and the bottleneck's expansion.

    Bottleneck width of a stage is ``floor(width * base_width / 64) * cardinality``
    and its output is ``expansion * width`` (timm/torchvision convention, so
    ResNeXt-50 32x4d has a 128-wide grouped 3x3 in its first stage).

    Attributes:
        expansion: block output width over ``width``.
    """

    expansion: int = 4

    def __post_init__(self):
        super().__post_init__()
        common.check_positive_int("expansion", self.expansion)
        for width in self.widths:
            group_width = width * self.base_width // 64
            if group_width == 0:
                raise ValueError(
                    "Every stage needs at least one channel per group: "
                    f"width * base_width // 64 must be >= 1. Received: width={width}, "
                    f"base_width={self.base_width}")


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

# A ResNeXt in the paper's template notation, small enough for a 2-core CPU:
# the ImageNet stem (7x7/2 conv + 3x3/2 max pool: the 32 px digits, upsampled
# from 8 px, come back to 8x8), three stages of one bottleneck each,
# cardinality 4 and a group width of 4 in the first stage ("ResNeXt-11 (4x4d)":
# 3 blocks x 3 layers + stem + classifier). The model of the ``digits_quick``
# training recipe: built by name, not published (``families.RECIPE_VARIANTS``).
RECIPE_VARIANTS = {
    "resnext11_4x4d": Spec(
        depths=(1, 1, 1), widths=(16, 32, 64), cardinality=4, base_width=16,
        default_size=32,
        description="ResNeXt-11 (4x4d): the quick model of the digits_quick recipe"),
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

    shortcut = common.projection_shortcut(x, out_channels=out_channels, stride=stride,
                                          spec=spec, name=name, **common_args)

    x = common.conv_bn(x, filters=width, kernel_size=1, name=f"{name}_1", **common_args)
    x = common.conv_bn(x, filters=width, kernel_size=3, stride=stride,
                       groups=spec.cardinality, name=f"{name}_2", **common_args)
    x = common.conv_bn(x, filters=out_channels, kernel_size=1, activation=None,
                       zero_gamma=zero_init_last_bn, name=f"{name}_3", **common_args)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


features = common.make_features(bottleneck, Spec, NAME)


# Sizes without building (``size.Tally``): the layers above, counted.
def tally_bottleneck(tally, x, *, stage, stride, spec):
    """``bottleneck`` counted."""
    width = spec.bottleneck_width(stage)
    out_channels = spec.widths[stage] * spec.expansion
    common.tally_shortcut(tally, x, out_channels=out_channels, stride=stride)
    x = tally.conv_bn(x, filters=width, kernel_size=1)
    x = tally.conv_bn(x, filters=width, kernel_size=3, stride=stride,
                      groups=spec.cardinality)
    return tally.conv_bn(x, filters=out_channels, kernel_size=1)


estimate = common.make_estimate(tally_bottleneck)

# Layer names are a contract with the converter: the stem and the shortcut
# follow ``common.STEM_RULES``/``SHORTCUT_RULES``; the block's three conv+BN
# pairs are timm's ``conv{k}``/``bn{k}``.
BLOCK_RULES = (
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[123])_conv", "layer{stage}.{block}.conv{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[123])_bn", "layer{stage}.{block}.bn{k}"),
)
torch_prefix = common.make_torch_prefix(BLOCK_RULES)
