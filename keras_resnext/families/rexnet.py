"""ReXNet: linear bottlenecks with a linearly growing channel schedule.

Han et al., "Rethinking Channel Dimensions for Efficient Model Design", CVPR
2021 (arXiv:2007.00992), in timm's layout (``timm/models/rexnet.py``, NAVER's
weights): a 3x3/2 stem (BN, SiLU), inverted residual "linear bottlenecks"
whose output width grows by ``final_chs / n_blocks`` per block, a 1x1 head
convolution (BN, SiLU), global average pool and the classifier. timm's
dropout before the classifier has no weights and is left out (it changes
nothing at inference).

A block: 1x1 expansion (BN, SiLU; absent when the expansion ratio is 1),
3x3 depthwise (stride here; BN, no activation), squeeze-excitation with a
BatchNorm inside (``mean -> fc1 -> BN -> ReLU -> fc2 -> sigmoid``; absent in
the first blocks), ReLU6, 1x1 linear projection (BN). The SE sits BEFORE the
ReLU6, as in timm. The residual is partial: when the stride is 1 and the
block widens (``in <= out``), the input is added to the first ``in`` output
channels only.

Every width comes from timm's rounding: Python ``round()`` (half to even)
then ``make_divisible`` (``int(v + divisor / 2)``); rexnet_100 has exact
halves (38.5 -> 38, 128.5 -> 128), where half-up rounding gives other shapes.
"""

import dataclasses
import functools
import math
import numbers
import re

from keras import layers

from keras_resnext.families import common
from keras_resnext.families import size
from keras_resnext.layers import DepthwiseConv2D

NAME = "rexnet"
HEAD_PREFIX = "head.fc"

# timm's fixed schedule: blocks per group (scaled by depth_mult), the stride
# of each group's first block, and the groups without expansion / without SE.
GROUP_DEPTHS = (1, 2, 2, 3, 3, 5)
GROUP_STRIDES = (1, 2, 2, 2, 1, 2)
EXPANSION = 6
STEM_WIDTH = 32
HEAD_WIDTH = 1280
# timm's activations (``act_layer="swish"``, ``dw_act_layer="relu6"``): the
# only ones the converted weights were trained with.
TIMM_ACTIVATIONS = {"act_layer": ("swish", "silu"), "dw_act_layer": ("relu6",)}


@dataclasses.dataclass(frozen=True)
class Block:
    """One linear bottleneck, as timm derives it.

    Attributes:
        in_chs: input channels.
        dw_chs: width of the depthwise convolution (expanded).
        out_chs: output channels.
        stride: stride of the depthwise convolution.
        expand: whether there is a 1x1 expansion (``dw_chs`` from ``in_chs``).
        se_chs: squeeze-excitation width, 0 without SE.
        shortcut: partial residual (stride 1 and ``in_chs <= out_chs``).
        level: pyramid level of the output (stride ``2**level``).
        index: 1-based position of the block within its level.
        timm_index: ``features.{timm_index}`` in timm.
    """

    in_chs: int
    dw_chs: int
    out_chs: int
    stride: int
    expand: bool
    se_chs: int
    shortcut: bool
    level: int
    index: int
    timm_index: int


@dataclasses.dataclass(frozen=True)
class Spec:
    """One ReXNet: timm's ``RexNet`` constructor arguments.

    Attributes:
        width_mult: width multiplier of every layer (stem and first block stay
            32 and ``initial_chs`` when below 1, as in timm).
        depth_mult: depth multiplier of the six block groups (ceil).
        initial_chs: output width of the first block at ``width_mult=1``.
        final_chs: total width added over the blocks at ``width_mult=1``.
        se_ratio: squeeze-excitation width over the depthwise width (floor),
            in [0, 1); 0 disables SE.
        ch_div: channel divisor of every width (1 in NAVER's models).
        default_size: default input height/width.
        description: one line for ``list_models`` and the docs.
    """

    width_mult: float = 1.0
    depth_mult: float = 1.0
    initial_chs: int = 16
    final_chs: int = 180
    se_ratio: float = 1 / 12
    ch_div: int = 1
    default_size: int = 224
    description: str = ""

    def __post_init__(self):
        for name in ("width_mult", "depth_mult"):
            value = getattr(self, name)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool) or
                    not math.isfinite(value) or value <= 0):
                raise ValueError(
                    f"`{name}` must be a positive number. Received: {name}={value!r}")
        se = self.se_ratio
        if (not isinstance(se, numbers.Real) or isinstance(se, bool) or
                not 0 <= se < 1):
            raise ValueError(
                f"`se_ratio` must be a number in [0, 1). Received: se_ratio={se!r}")
        for name in ("initial_chs", "final_chs", "ch_div", "default_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}")

    @classmethod
    def from_config(cls, config):
        """Builds a Spec from timm's ``RexNet`` arguments (e.g. a fixture's JSON).

        Unknown keys are ignored; ``act_layer``/``dw_act_layer`` other than
        timm's defaults raise, since this module builds only those.
        """
        for key, accepted in TIMM_ACTIVATIONS.items():
            if key in config and config[key] not in accepted:
                raise ValueError(
                    f"`{key}` must be one of {accepted}. Received: {key}={config[key]!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields})

    @property
    def stem_chs(self):
        """Output width of the stem (32 scaled; 32 when ``width_mult < 1``)."""
        base = STEM_WIDTH / self.width_mult if self.width_mult < 1 else STEM_WIDTH
        return common.make_divisible(round(base * self.width_mult), self.ch_div)

    @property
    def head_chs(self):
        """Output width of the 1x1 head convolution (no ``round()`` in timm)."""
        return common.make_divisible(HEAD_WIDTH * self.width_mult, self.ch_div)

    @property
    def blocks(self):
        """The linear bottlenecks, in order (a tuple of ``Block``)."""
        return _blocks(self)

    @property
    def min_size(self):
        """Smallest input height/width accepted (stride 32, as keras.applications)."""
        return 32


@functools.lru_cache(maxsize=None)
def _blocks(spec):
    # timm's _block_cfg and _build_blocks, same float operations in the same
    # order (the widths depend on exact halves).
    depths = [math.ceil(d * spec.depth_mult) for d in GROUP_DEPTHS]
    strides = [s for d, s0 in zip(depths, GROUP_STRIDES) for s in [s0] + [1] * (d - 1)]
    n = sum(depths)
    base = spec.initial_chs / spec.width_mult if spec.width_mult < 1 else spec.initial_chs
    out_chs = []
    for _ in range(n):
        out_chs.append(common.make_divisible(round(base * spec.width_mult), spec.ch_div))
        base += spec.final_chs / (n * 1.0)
    no_expand = depths[0]
    no_se = depths[0] + depths[1]

    blocks = []
    in_chs, level, index = spec.stem_chs, 1, 0
    for i, (out, stride) in enumerate(zip(out_chs, strides)):
        expand = i >= no_expand
        dw_chs = in_chs
        if expand:
            dw_chs = common.make_divisible(round(in_chs * EXPANSION), spec.ch_div)
        se_chs = 0
        if i >= no_se and spec.se_ratio > 0:
            se_chs = common.make_divisible(int(dw_chs * spec.se_ratio), spec.ch_div)
        if stride > 1:
            level, index = level + 1, 0
        index += 1
        blocks.append(Block(
            in_chs=in_chs, dw_chs=dw_chs, out_chs=out, stride=stride, expand=expand,
            se_chs=se_chs, shortcut=stride == 1 and in_chs <= out, level=level,
            index=index, timm_index=i))
        in_chs = out
    return tuple(blocks)


VARIANTS = {
    "rexnet_100": Spec(description="ReXNet 1.0x (Han et al., CVPR 2021)"),
    "rexnet_130": Spec(width_mult=1.3, description="ReXNet 1.3x (Han et al., CVPR 2021)"),
    "rexnet_150": Spec(width_mult=1.5, description="ReXNet 1.5x (Han et al., CVPR 2021)"),
    "rexnet_200": Spec(width_mult=2.0, description="ReXNet 2.0x (Han et al., CVPR 2021)"),
    "rexnet_300": Spec(width_mult=3.0, description="ReXNet 3.0x (Han et al., CVPR 2021)"),
}

FACTORIES = {
    "ReXNet100": "rexnet_100",
    "ReXNet130": "rexnet_130",
    "ReXNet150": "rexnet_150",
    "ReXNet200": "rexnet_200",
    "ReXNet300": "rexnet_300",
}


def _channels(x, start, stop=None):
    """Channels ``start:stop`` of ``x`` (a slice op in the functional graph)."""
    if common.bn_axis() == 3:
        return x[..., start:stop]
    return x[:, start:stop]


def squeeze_excite(x, *, channels, name, synchronized=False):
    """timm's ``SEModule`` with ``norm_layer=BatchNorm2d``.

    ``mean -> fc1 (1x1, bias) -> BN -> ReLU -> fc2 (1x1, bias) -> sigmoid``,
    then the input is scaled by the gate.
    """
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = common.conv(s, filters=channels, kernel_size=1, use_bias=True, name=f"{name}_fc1")
    s = common.batch_norm(s, name=f"{name}_bn", synchronized=synchronized)
    s = layers.Activation("relu", name=f"{name}_relu")(s)
    s = common.conv(s, filters=x.shape[common.bn_axis()], kernel_size=1, use_bias=True,
                    name=f"{name}_fc2")
    s = layers.Activation("sigmoid", name=f"{name}_sigmoid")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


def linear_bottleneck(x, *, block, name, zero_init_last_bn=False, synchronized=False):
    """timm's ``LinearBottleneck``.

    Args:
        x: input tensor (``block.in_chs`` channels).
        block: the ``Block`` (widths, stride, SE width, shortcut).
        name: block prefix, e.g. ``"conv3_block2"``.
        zero_init_last_bn: zero-initialise the projection's BN scale of
            residual blocks (a block without shortcut keeps its scale).
        synchronized: synchronized BatchNorm.

    Returns:
        Output tensor (``block.out_chs`` channels).
    """
    shortcut = x
    if block.expand:
        x = common.conv_bn(x, filters=block.dw_chs, kernel_size=1, activation="silu",
                           synchronized=synchronized, name=f"{name}_1")
    # Depthwise 3x3: symmetric PyTorch padding (an explicit pad at stride 2).
    x, padding = common.pad_symmetric(x, kernel_size=3, stride=block.stride,
                                      name=f"{name}_2_pad")
    x = DepthwiseConv2D(
        3, strides=block.stride, padding=padding, use_bias=False,
        depthwise_initializer=common.conv_initializer(), name=f"{name}_2_conv")(x)
    x = common.batch_norm(x, name=f"{name}_2_bn", synchronized=synchronized)
    if block.se_chs:
        x = squeeze_excite(x, channels=block.se_chs, name=f"{name}_se",
                           synchronized=synchronized)
    x = layers.Activation("relu6", name=f"{name}_2_relu6")(x)
    x = common.conv_bn(x, filters=block.out_chs, kernel_size=1, activation=None,
                       zero_gamma=zero_init_last_bn and block.shortcut,
                       synchronized=synchronized, name=f"{name}_3")
    if not block.shortcut:
        return x
    if block.in_chs == block.out_chs:
        return layers.Add(name=f"{name}_add")([x, shortcut])
    # Partial residual: the input joins the first in_chs output channels.
    head = layers.Add(name=f"{name}_add")([_channels(x, 0, block.in_chs), shortcut])
    return layers.Concatenate(axis=common.bn_axis(), name=f"{name}_out")(
        [head, _channels(x, block.in_chs)])


def features(inputs, spec, *, zero_init_last_bn=False, synchronized_bn=False):
    """The backbone of ``spec``: ``{"P{level}": tensor}``, deepest last.

    ``P1``..``P4`` are the outputs of the last block at strides 2..16; ``P5``
    is the head convolution's output (what the builder pools), so it has
    ``spec.head_chs`` channels, not the last block's.
    """
    common.check_spec(spec, Spec, NAME)
    x = common.conv_bn(inputs, filters=spec.stem_chs, kernel_size=3, stride=2,
                       activation="silu", synchronized=synchronized_bn, name="conv1")
    outputs = {}
    for block in spec.blocks:
        x = linear_bottleneck(x, block=block, name=_block_name(block),
                              zero_init_last_bn=zero_init_last_bn,
                              synchronized=synchronized_bn)
        outputs[f"P{block.level}"] = x
    outputs[f"P{spec.blocks[-1].level}"] = common.conv_bn(
        x, filters=spec.head_chs, kernel_size=1, activation="silu",
        synchronized=synchronized_bn, name="top")
    return outputs



def estimate(spec, x, tally):
    """``features`` counted into ``tally`` (see ``size.Tally``); returns the
    final feature map's ``size.Shape``, or None for a schedule refused on its
    length alone (``tally.layers`` is then a lower bound)."""
    blocks = sum(math.ceil(d * spec.depth_mult) for d in GROUP_DEPTHS)
    if 2 * blocks > size.MAX_LAYERS:  # >= 2 convolutions a block; not enumerated
        tally.layers = 2 * blocks
        return None
    x = tally.conv_bn(x, filters=spec.stem_chs, kernel_size=3, stride=2)
    for block in spec.blocks:
        if block.expand:
            x = tally.conv_bn(x, filters=block.dw_chs, kernel_size=1)
        x = tally.batch_norm(tally.depthwise(x, kernel_size=3, stride=block.stride))
        if block.se_chs:
            s = tally.conv(size.Shape(block.dw_chs, 1, 1), filters=block.se_chs,
                           use_bias=True)
            tally.conv(tally.batch_norm(s), filters=block.dw_chs, use_bias=True)
        x = tally.conv_bn(x, filters=block.out_chs, kernel_size=1)
    return tally.conv_bn(x, filters=spec.head_chs, kernel_size=1)

def _block_name(block):
    return f"conv{block.level}_block{block.index}"


# Layer names are a contract with the converter. keras.applications' ResNet
# style: the stem is ``conv1``, block ``b`` (1-based) of pyramid level ``l``
# (stride 2**l) is ``conv{l}_block{b}``, with ``_1`` the 1x1 expansion, ``_2``
# the 3x3 depthwise (``_2_relu6`` after the SE), ``_3`` the 1x1 projection and
# ``_se_{pool,fc1,bn,relu,fc2,sigmoid,excite}`` the squeeze-excitation; the 1x1
# head conv is ``top`` (keras.applications' EfficientNet name for it). timm
# numbers the blocks ``features.N`` across levels and the head conv is the
# last ``features`` entry.
BLOCK_RULES = (
    (r"1_conv", "conv_exp.conv"),
    (r"1_bn", "conv_exp.bn"),
    (r"2_conv", "conv_dw.conv"),
    (r"2_bn", "conv_dw.bn"),
    (r"se_fc1", "se.fc1"),
    (r"se_bn", "se.bn"),
    (r"se_fc2", "se.fc2"),
    (r"3_conv", "conv_pwl.conv"),
    (r"3_bn", "conv_pwl.bn"),
)
OTHER_RULES = (
    (r"conv1_conv", "stem.conv"),
    (r"conv1_bn", "stem.bn"),
    (r"top_conv", "features.{head}.conv"),
    (r"top_bn", "features.{head}.bn"),
)


@functools.lru_cache(maxsize=None)
def _timm_indices(spec):
    return {_block_name(b): b.timm_index for b in spec.blocks}


def torch_prefix(layer_name, spec):
    """The PyTorch (timm) module prefix of a Keras layer of ``spec``, or None."""
    match = re.fullmatch(r"(conv\d+_block\d+)_(.+)", layer_name)
    if match:
        index = _timm_indices(spec).get(match.group(1))
        rule = common.match_rules(BLOCK_RULES, match.group(2))
        if index is None or rule is None:
            return None
        return f"features.{index}.{rule}"
    return common.match_rules(OTHER_RULES, layer_name, head=len(spec.blocks))
