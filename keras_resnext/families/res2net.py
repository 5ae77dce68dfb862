"""Res2Net and Res2NeXt: bottlenecks with hierarchical multi-scale 3x3 splits.

Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2019
(arXiv:1904.01169), section 3.1 and Fig. 2; Res2NeXt adds a cardinality
(grouped 3x3s) as in ResNeXt (section 3.3). The -D variants use the deep stem
and the average-pool shortcut of ResNet-D. Built as timm's ``ResNet`` with its
``Bottle2neck`` block, so the stem, the stages and the shortcut follow
``common``, and converted timm weights give the same numbers.

The block, as timm computes it (which the pretrained weights need):

- the 1x1 ``conv1`` gives ``scale`` contiguous chunks of
  ``width = floor(planes * base_width / 64) * cardinality`` channels;
- chunk ``i < scale - 1`` goes through its own 3x3 (``groups=cardinality``,
  the block's stride) + BN + ReLU; in a normal block its input is
  ``chunk[i] + output[i - 1]`` for ``i > 0`` (the hierarchical sum);
- a "stage" block (stride > 1 or a projection shortcut, so the first block of
  the first stage is one at stride 1) has no sum, and its passthrough chunk is
  average-pooled (3x3, the block's stride, zero padding counted in the mean);
- the passthrough is the LAST chunk and is concatenated last (the paper's
  figure draws it first), then the 1x1 ``conv3``.
"""

import dataclasses
import typing

import keras
from keras import layers

from keras_resnext.families import common
from keras_resnext.families import size

NAME = "res2net"
HEAD_PREFIX = "fc"


@dataclasses.dataclass(frozen=True)
class Spec(common.ResNetSpec):
    """One Res2Net/Res2NeXt architecture: ``common.ResNetSpec`` and the splits.

    ``base_width`` is the width of one split (per group) at ``planes == 64``
    (the "26w" of res2net50_26w_4s); ``cardinality`` groups every split's 3x3
    (Res2NeXt). No CIFAR stem.

    Attributes:
        scale: number of splits of the bottleneck (the "4s"); at least 2.
        expansion: block output width over ``planes``.
    """

    STEM_TYPES: typing.ClassVar[tuple] = ("", "deep")

    base_width: int = 26
    scale: int = 4
    expansion: int = 4

    def __post_init__(self):
        super().__post_init__()
        common.check_positive_int("expansion", self.expansion)
        if not isinstance(self.scale, int) or isinstance(self.scale, bool) or self.scale < 2:
            raise ValueError(
                "`scale` (the number of splits) must be an integer >= 2. "
                f"Received: scale={self.scale!r}")
        # Each split has floor(planes * base_width / 64) channels per group, a
        # multiple of ``cardinality`` by construction; it must not be empty.
        for width in self.widths:
            if width * self.base_width // 64 == 0:
                raise ValueError(
                    "`base_width` is too small for the splits: every split needs at "
                    "least one channel per group, floor(width * base_width / 64) >= 1 "
                    f"(base_width >= {-(-64 // width)} for width {width}). Received: "
                    f"width={width}, base_width={self.base_width}, scale={self.scale}, "
                    f"cardinality={self.cardinality}")

    def split_width(self, stage):
        """Channels of one split (chunk) in ``stage`` (0-based)."""
        return self.bottleneck_width(stage)


_R50 = (3, 4, 6, 3)
_R101 = (3, 4, 23, 3)
_D = dict(stem_type="deep", stem_width=32, avg_down=True)

VARIANTS = {
    "res2net50_26w_4s": Spec(
        depths=_R50, base_width=26, scale=4, description="Res2Net-50 (26w x 4s)"),
    "res2net50_26w_6s": Spec(
        depths=_R50, base_width=26, scale=6, description="Res2Net-50 (26w x 6s)"),
    "res2net50_26w_8s": Spec(
        depths=_R50, base_width=26, scale=8, description="Res2Net-50 (26w x 8s)"),
    "res2net50_48w_2s": Spec(
        depths=_R50, base_width=48, scale=2, description="Res2Net-50 (48w x 2s)"),
    "res2net50_14w_8s": Spec(
        depths=_R50, base_width=14, scale=8, description="Res2Net-50 (14w x 8s)"),
    "res2net101_26w_4s": Spec(
        depths=_R101, base_width=26, scale=4, description="Res2Net-101 (26w x 4s)"),
    "res2next50": Spec(
        depths=_R50, base_width=4, scale=4, cardinality=8,
        description="Res2NeXt-50 (8c x 4w x 4s)"),
    "res2net50d": Spec(
        depths=_R50, base_width=26, scale=4, **_D,
        description="Res2Net-50-D (26w x 4s): deep stem, average-pool shortcut"),
    "res2net101d": Spec(
        depths=_R101, base_width=26, scale=4, **_D,
        description="Res2Net-101-D (26w x 4s): deep stem, average-pool shortcut"),
}

FACTORIES = {
    "Res2Net50": "res2net50_26w_4s",
    "Res2Net101": "res2net101_26w_4s",
    "Res2NeXt50": "res2next50",
    "Res2Net50D": "res2net50d",
    "Res2Net101D": "res2net101d",
}


@keras.saving.register_keras_serializable(package="keras_resnext")
class Split(layers.Layer):
    """``keras.ops.split`` as a named layer: ``sections`` equal chunks along ``axis``.

    Keras has no public split layer (``keras.ops.split`` takes no name). No
    weights, so a model's weights and their order are those of the op it replaces.

    Args:
        sections: number of equal chunks; the axis must divide evenly.
        axis: the axis to split.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).
    """

    def __init__(self, sections, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.sections = sections
        self.axis = axis

    def call(self, inputs):
        return keras.ops.split(inputs, self.sections, axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if shape[self.axis] is not None:
            if shape[self.axis] % self.sections:
                raise ValueError(
                    f"Split: axis {self.axis} of size {shape[self.axis]} does not "
                    f"divide into {self.sections} equal chunks. "
                    f"Received: input_shape={tuple(input_shape)}")
            shape[self.axis] //= self.sections
        return [tuple(shape)] * self.sections

    def get_config(self):
        return {**super().get_config(), "sections": self.sections, "axis": self.axis}


# Layer names are a contract with the converter (``NAME_RULES``). A block
# ``conv{s}_block{b}`` has keras.applications' ResNet names for its 1x1s
# (``_1_conv/_bn/_relu``, ``_3_conv/_bn``), shortcut (``_0_conv/_bn``,
# ``_0_pool``) and ``_add``/``_out``; its multi-scale 3x3 is ``_2_*``:
# ``_2_split`` (the chunks), ``_2_split{i}_add`` (running sum, i > 0),
# ``_2_split{i}_pad/_conv/_bn/_relu`` (timm's ``convs.{i}``/``bns.{i}``, i
# 0-based as in timm), ``_2_pool_pad``/``_2_pool`` (passthrough of a stage
# block) and ``_2_concat``.
def bottle2neck(x, *, stage, stride, spec, name, zero_init_last_bn=False,
                synchronized=False):
    """The Res2Net block: 1x1 -> ``scale`` hierarchical 3x3 splits -> 1x1.

    Args:
        x: input tensor.
        stage: 0-based stage index (selects widths from ``spec``).
        stride: stride of the block (on every split's 3x3 and the pool).
        spec: the architecture ``Spec``.
        name: block prefix, e.g. ``"conv2_block1"``.
        zero_init_last_bn: zero-initialise the last BN scale.
        synchronized: synchronized BatchNorm.

    Returns:
        Output tensor.
    """
    axis = common.bn_axis()
    width = spec.split_width(stage)
    out_channels = spec.widths[stage] * spec.expansion
    common_args = dict(synchronized=synchronized)

    stage_block = stride != 1 or x.shape[axis] != out_channels
    shortcut = common.projection_shortcut(
        x, out_channels=out_channels, stride=stride, spec=spec, name=name,
        **common_args)

    x = common.conv_bn(x, filters=width * spec.scale, kernel_size=1,
                       name=f"{name}_1", **common_args)
    chunks = Split(spec.scale, axis=axis, name=f"{name}_2_split")(x)
    outputs = []
    for i, chunk in enumerate(chunks[:-1]):
        if i > 0 and not stage_block:
            chunk = layers.Add(name=f"{name}_2_split{i}_add")([outputs[-1], chunk])
        outputs.append(common.conv_bn(
            chunk, filters=width, kernel_size=3, stride=stride,
            groups=spec.cardinality, name=f"{name}_2_split{i}", **common_args))
    passthrough = chunks[-1]
    if stage_block:
        # Also at stride 1 (first block of the first stage), as timm does.
        passthrough = common.avg_pool_3x3(passthrough, stride=stride,
                                          name=f"{name}_2_pool")
    x = layers.Concatenate(axis=axis, name=f"{name}_2_concat")(outputs + [passthrough])

    x = common.conv_bn(x, filters=out_channels, kernel_size=1, activation=None,
                       zero_gamma=zero_init_last_bn, name=f"{name}_3", **common_args)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


features = common.make_features(bottle2neck, Spec, NAME)


def tally_bottle2neck(tally, x, *, stage, stride, spec):
    """``bottle2neck`` counted."""
    width = spec.split_width(stage)
    out_channels = spec.widths[stage] * spec.expansion
    common.tally_shortcut(tally, x, out_channels=out_channels, stride=stride)
    x = tally.conv_bn(x, filters=width * spec.scale, kernel_size=1)
    split = tally.repeat(
        lambda t, chunk: t.conv_bn(chunk, filters=width, kernel_size=3, stride=stride,
                                   groups=spec.cardinality),
        size.Shape(width, x.height, x.width), spec.scale - 1)
    return tally.conv_bn(size.Shape(width * spec.scale, split.height, split.width),
                         filters=out_channels, kernel_size=1)


estimate = common.make_estimate(tally_bottle2neck)

BLOCK_RULES = (
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[13])_conv", "layer{stage}.{block}.conv{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_(?P<k>[13])_bn", "layer{stage}.{block}.bn{k}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_split(?P<i>\d+)_conv", "layer{stage}.{block}.convs.{i}"),
    (r"conv(?P<s>\d+)_block(?P<b>\d+)_2_split(?P<i>\d+)_bn", "layer{stage}.{block}.bns.{i}"),
)
torch_prefix = common.make_torch_prefix(BLOCK_RULES)
