"""ResNeSt: the split-attention bottleneck family, as data plus block functions.

Zhang et al., "ResNeSt: Split-Attention Networks", 2020 (arXiv:2004.08955),
in timm's layout (``timm/models/resnest.py``, ``timm/layers/split_attn.py``):
timm's ``ResNet`` with ``ResNestBottleneck``, a deep stem and the average-pool
shortcut of ResNet-D.

The block is a ResNet bottleneck whose 3x3 is a split-attention convolution:
one grouped 3x3 with ``groups = cardinality * radix`` whose output is
radix-major (``radix`` splits of ``C`` channels); the attention sees the global
mean of the sum of the splits, goes through two grouped 1x1 convolutions
(``fc1``, BN, ReLU, ``fc2``) and an r-softmax over the splits (a sigmoid when
``radix == 1``), and the block keeps the attention-weighted sum of the splits.
A strided block moves its stride to a 3x3 average pool ("avd"), before the
split-attention convolution (``avd_first``) or after it.
"""

import dataclasses
import math

import keras
from keras import layers
from keras import ops

from keras_resnext.families import common
from keras_resnext.families import size

NAME = "resnest"
HEAD_PREFIX = "fc"
EXPANSION = 4  # timm's ResNestBottleneck: output = 4 * planes


@dataclasses.dataclass(frozen=True)
class Spec(common.ResNetSpec):
    """One ResNeSt architecture: ``common.ResNetSpec`` and the split attention.

    Bottleneck width of a stage is ``floor(width * base_width / 64) *
    cardinality`` (as in ResNeXt); its split-attention convolution outputs
    ``radix`` times that, in ``cardinality * radix`` groups. The attention
    width is ``common.make_divisible(bottleneck width * radix / 4, 8, min_value=32)``.
    timm's ResNeSt has a deep 32-wide stem and the average-pool shortcut by default.

    Attributes:
        radix: splits per cardinal group (R in the paper); 1 makes the
            attention a sigmoid gate.
        avd: move a block's stride to a 3x3 average pool.
        avd_first: pool before the split-attention convolution (else after).
    """

    radix: int = 2
    avd: bool = True
    avd_first: bool = False
    stem_type: str = "deep"
    stem_width: int = 32
    avg_down: bool = True

    def __post_init__(self):
        super().__post_init__()
        common.check_positive_int("radix", self.radix)
        for name in ("avd", "avd_first"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"`{name}` must be a bool. Received: {name}={getattr(self, name)!r}")
        for stage, width in enumerate(self.widths):
            group_width = width * self.base_width // 64
            # The split-attention conv has cardinality * radix groups over the
            # bottleneck width (group_width * cardinality) input channels.
            if group_width == 0 or group_width % self.radix:
                raise ValueError(
                    "Every stage's bottleneck width must be divisible by "
                    "cardinality * radix (the groups of the split-attention "
                    "convolution): width * base_width // 64 must be a positive "
                    f"multiple of radix. Received: widths[{stage}]={width}, "
                    f"base_width={self.base_width}, cardinality={self.cardinality}, "
                    f"radix={self.radix} (bottleneck width "
                    f"{group_width * self.cardinality}, groups "
                    f"{self.cardinality * self.radix})")
            attention = self.attention_width(stage)
            if attention % self.cardinality:
                raise ValueError(
                    "The attention width of every stage must be divisible by "
                    "`cardinality` (the groups of fc1 and fc2). Received: "
                    f"cardinality={self.cardinality}, radix={self.radix}, "
                    f"widths[{stage}]={width}, base_width={self.base_width} "
                    f"(attention width {attention})")

    def attention_width(self, stage):
        """Width of the attention's hidden layer (fc1 outputs) in ``stage``."""
        return common.make_divisible(self.bottleneck_width(stage) * self.radix * 0.25,
                                     divisor=8, min_value=32)


VARIANTS = {
    "resnest14d": Spec(
        depths=(1, 1, 1, 1),
        description="ResNeSt-14d (2s1x64d): deep stem, average-pool shortcut"),
    "resnest26d": Spec(
        depths=(2, 2, 2, 2),
        description="ResNeSt-26d (2s1x64d): deep stem, average-pool shortcut"),
    "resnest50d": Spec(
        depths=(3, 4, 6, 3),
        description="ResNeSt-50 (2s1x64d), the paper's ResNeSt-50"),
    "resnest101e": Spec(
        depths=(3, 4, 23, 3), stem_width=64, default_size=256,
        description="ResNeSt-101 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-101"),
    "resnest200e": Spec(
        depths=(3, 24, 36, 3), stem_width=64, default_size=320,
        description="ResNeSt-200 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-200"),
    "resnest269e": Spec(
        depths=(3, 30, 48, 8), stem_width=64, default_size=416,
        description="ResNeSt-269 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-269"),
    "resnest50d_4s2x40d": Spec(
        depths=(3, 4, 6, 3), cardinality=2, base_width=40, radix=4, avd_first=True,
        description="ResNeSt-50 4s2x40d (radix 4, cardinality 2), ablation study"),
    "resnest50d_1s4x24d": Spec(
        depths=(3, 4, 6, 3), cardinality=4, base_width=24, radix=1, avd_first=True,
        description="ResNeSt-50 1s4x24d (radix 1: sigmoid attention), ablation study"),
}


FACTORIES = {
    "ResNeSt14D": "resnest14d",
    "ResNeSt26D": "resnest26d",
    "ResNeSt50": "resnest50d",
    "ResNeSt101": "resnest101e",
    "ResNeSt200": "resnest200e",
    "ResNeSt269": "resnest269e",
}


@keras.saving.register_keras_serializable(package="keras_resnext")
class RadixSum(layers.Layer):
    """Sums the ``radix`` equal splits of the channel axis (radix-major layout).

    ``(..., radix * C)`` -> ``(..., C)``: channel ``r * C + c`` goes to ``c``,
    as timm's ``x.reshape(B, radix, C, H, W).sum(1)``.
    """

    def __init__(self, radix, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.radix = radix
        self.axis = axis

    def call(self, inputs):
        splits = ops.split(inputs, self.radix, axis=self.axis)
        out = splits[0]
        for split in splits[1:]:
            out = out + split
        return out

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if shape[self.axis] is not None:
            shape[self.axis] //= self.radix
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "radix": self.radix, "axis": self.axis}


@keras.saving.register_keras_serializable(package="keras_resnext")
class RadixSoftmax(layers.Layer):
    """timm's ``RadixSoftmax`` on a ``(B, 1, 1, radix * C)`` attention map.

    fc2's (grouped) outputs are cardinality-major: ``(cardinality, radix,
    C / cardinality)``. The softmax runs over radix, and the result is laid out
    radix-major, ``(radix, cardinality, C / cardinality)``, as the splits of
    the split-attention convolution. With ``radix == 1`` it is a sigmoid.
    """

    def __init__(self, radix, cardinality, **kwargs):
        super().__init__(**kwargs)
        self.radix = radix
        self.cardinality = cardinality

    def call(self, inputs):
        if self.radix == 1:
            return ops.sigmoid(inputs)
        shape = (-1,) + tuple(inputs.shape[1:])  # spatial dims are 1: any format
        per_group = math.prod(inputs.shape[1:]) // (self.cardinality * self.radix)
        x = ops.reshape(inputs, (-1, self.cardinality, self.radix, per_group))
        x = ops.softmax(x, axis=2)
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "radix": self.radix,
                "cardinality": self.cardinality}


def split_attention(x, *, stage, stride, spec, name, synchronized=False):
    """The split-attention 3x3 (timm's ``SplitAttn``): ``bottleneck_width``
    channels in and out.

    Layers (``name`` is e.g. ``"conv2_block1_2"``): ``_conv``/``_bn``/``_relu``
    (the grouped 3x3, radix-major outputs), then the attention
    ``_attn_sum``, ``_attn_gap``, ``_attn_fc1``, ``_attn_bn``, ``_attn_relu``,
    ``_attn_fc2``, ``_attn_rsoftmax``, ``_attn_scale``, ``_attn_out``.
    """
    width = spec.bottleneck_width(stage)
    radix, cardinality = spec.radix, spec.cardinality
    axis = common.bn_axis()
    x = common.conv_bn(x, filters=width * radix, kernel_size=3, stride=stride,
                       groups=cardinality * radix, name=name, synchronized=synchronized)

    gap = RadixSum(radix, axis=axis, name=f"{name}_attn_sum")(x) if radix > 1 else x
    gap = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_attn_gap")(gap)
    gap = common.conv(gap, filters=spec.attention_width(stage), kernel_size=1,
                      groups=cardinality, use_bias=True, name=f"{name}_attn_fc1")
    gap = common.batch_norm(gap, name=f"{name}_attn_bn", synchronized=synchronized)
    gap = layers.Activation("relu", name=f"{name}_attn_relu")(gap)
    attn = common.conv(gap, filters=width * radix, kernel_size=1, groups=cardinality,
                       use_bias=True, name=f"{name}_attn_fc2")
    attn = RadixSoftmax(radix, cardinality, name=f"{name}_attn_rsoftmax")(attn)
    x = layers.Multiply(name=f"{name}_attn_scale")([x, attn])
    if radix > 1:
        x = RadixSum(radix, axis=axis, name=f"{name}_attn_out")(x)
    return x


def bottleneck(x, *, stage, stride, spec, name, zero_init_last_bn=False,
               synchronized=False):
    """The ResNeSt block: 1x1 -> split-attention 3x3 -> 1x1, plus shortcut.

    With ``spec.avd`` a strided block runs its 3x3 at stride 1 and downsamples
    with ``AvgPool2d(3, stride, padding=1)`` (zeros counted), before the 3x3
    when ``spec.avd_first``, else after it. The shortcut is
    ``common.projection_shortcut`` (average pool + 1x1 with ``spec.avg_down``).

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
    out_channels = spec.widths[stage] * EXPANSION
    common_args = dict(synchronized=synchronized)

    shortcut = common.projection_shortcut(
        x, out_channels=out_channels, stride=stride, spec=spec, name=name,
        **common_args)

    avd_stride = stride if spec.avd and stride > 1 else 0
    x = common.conv_bn(x, filters=width, kernel_size=1, name=f"{name}_1", **common_args)
    if avd_stride and spec.avd_first:
        x = common.avg_pool_3x3(x, stride=avd_stride, name=f"{name}_avd_pool")
    x = split_attention(x, stage=stage, stride=1 if avd_stride else stride, spec=spec,
                        name=f"{name}_2", **common_args)
    if avd_stride and not spec.avd_first:
        x = common.avg_pool_3x3(x, stride=avd_stride, name=f"{name}_avd_pool")
    x = common.conv_bn(x, filters=out_channels, kernel_size=1, activation=None,
                       zero_gamma=zero_init_last_bn, name=f"{name}_3", **common_args)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


features = common.make_features(bottleneck, Spec, NAME)


def tally_split_attention(tally, x, *, stage, stride, spec):
    """``split_attention`` counted; returns its output ``size.Shape``."""
    width = spec.bottleneck_width(stage)
    radix, cardinality = spec.radix, spec.cardinality
    x = tally.conv_bn(x, filters=width * radix, kernel_size=3, stride=stride,
                      groups=cardinality * radix)
    gap = size.Shape(width, 1, 1)
    gap = tally.batch_norm(tally.conv(gap, filters=spec.attention_width(stage),
                                      groups=cardinality, use_bias=True))
    tally.conv(gap, filters=width * radix, groups=cardinality, use_bias=True)
    return size.Shape(width, x.height, x.width)


def tally_bottleneck(tally, x, *, stage, stride, spec):
    """``bottleneck`` counted."""
    width = spec.bottleneck_width(stage)
    out_channels = spec.widths[stage] * EXPANSION
    common.tally_shortcut(tally, x, out_channels=out_channels, stride=stride)
    avd_stride = stride if spec.avd and stride > 1 else 0
    x = tally.conv_bn(x, filters=width, kernel_size=1)
    if avd_stride and spec.avd_first:
        x = x.strided(avd_stride)
    x = tally_split_attention(tally, x, stage=stage, stride=1 if avd_stride else stride,
                              spec=spec)
    if avd_stride and not spec.avd_first:
        x = x.strided(avd_stride)
    return tally.conv_bn(x, filters=out_channels, kernel_size=1)


estimate = common.make_estimate(tally_bottleneck)

# Layer names are a contract with the converter: keras.applications' ResNet
# style (``conv{s}_block{b}_{k}_conv``/``_bn``, ``_0_*`` the shortcut, named by
# ``common.STEM_RULES``/``SHORTCUT_RULES``); the split-attention extras are
# ``conv{s}_block{b}_2_attn_*`` (fc1, bn, fc2 carry weights) and the avd pool
# ``conv{s}_block{b}_avd_pool``.
# timm: conv2 is a SplitAttn whose BN is ``conv2.bn0`` and whose attention is
# ``conv2.fc1``/``conv2.bn1``/``conv2.fc2``; the block's ``bn2`` is an Identity.
BLOCK_RULES = (
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[13])_conv", "layer{stage}.{block}.conv{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[13])_bn", "layer{stage}.{block}.bn{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_conv", "layer{stage}.{block}.conv2.conv"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_bn", "layer{stage}.{block}.conv2.bn0"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_attn_fc1", "layer{stage}.{block}.conv2.fc1"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_attn_bn", "layer{stage}.{block}.conv2.bn1"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_attn_fc2", "layer{stage}.{block}.conv2.fc2"),
)
torch_prefix = common.make_torch_prefix(BLOCK_RULES)
