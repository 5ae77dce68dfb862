"""What the families share: building blocks, and timm's ``ResNet`` skeleton.

One place for the BatchNorm settings and the PyTorch padding rule, so that
every family converts PyTorch weights to the same numbers. The second half is
the skeleton of the families built on timm's ``ResNet`` class (ResNet/ResNeXt,
ResNeSt, Res2Net): their spec base ``ResNetSpec``, the stem, the stages, the
projection shortcut, their sizes without building and their PyTorch names.
A family module imports this module, never another family module.
"""

import dataclasses
import re
import typing

import keras
from keras import layers

from keras_resnext.layers import BatchNorm
from keras_resnext.layers import GroupConv2D
from keras_resnext.layers import PointwiseConv2D

# PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras 0.9): the
# weights we convert were trained with them.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def bn_axis():
    """The channel axis of the current image data format."""
    return 3 if keras.config.image_data_format() == "channels_last" else 1


def conv_initializer():
    """torchvision/timm init: kaiming normal, fan_out, ReLU gain."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal")


def batch_norm(x, *, name, zero_gamma=False, synchronized=False):
    """``BatchNorm`` with PyTorch's epsilon and momentum."""
    return BatchNorm(
        axis=bn_axis(), epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized, name=name)(x)


def pad_symmetric(x, *, kernel_size, stride, name):
    """PyTorch's symmetric padding ``k // 2``; returns ``(x, keras_padding)``.

    Keras ``padding="same"`` pads only after when the stride is 2 and the size
    even; at stride 1 (odd kernel) it is symmetric and needs no extra layer.
    """
    if kernel_size == 1:
        return x, "valid"
    if stride == 1:
        return x, "same"
    return layers.ZeroPadding2D(kernel_size // 2, name=name)(x), "valid"


def conv(x, *, filters, kernel_size, stride=1, groups=1, use_bias=False, name,
         pad_name=None):
    """A convolution with PyTorch padding.

    ``GroupConv2D`` when ``groups > 1``, ``PointwiseConv2D`` for a dense 1x1
    (a matrix product on JAX's CPU backend), else ``keras.layers.Conv2D``.
    """
    x, padding = pad_symmetric(x, kernel_size=kernel_size, stride=stride,
                               name=pad_name or f"{name}_pad")
    conv_cls = (GroupConv2D if groups > 1 else
                PointwiseConv2D if kernel_size == 1 else layers.Conv2D)
    return conv_cls(filters, kernel_size, strides=stride, padding=padding,
                    groups=groups, use_bias=use_bias,
                    kernel_initializer=conv_initializer(), name=name)(x)


def conv_bn(x, *, filters, kernel_size, stride=1, groups=1, activation="relu",
            zero_gamma=False, synchronized=False, name):
    """Convolution (symmetric padding, no bias), BatchNorm, optional activation.

    Args:
        x: input tensor.
        filters: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        groups: convolution groups (``GroupConv2D`` when > 1).
        activation: a Keras activation name, or None.
        zero_gamma: initialise the BN scale to zero (last BN of a block).
        synchronized: synchronized BatchNorm across replicas.
        name: prefix; layers are ``{name}_pad``, ``_conv``, ``_bn``, ``_{activation}``.

    Returns:
        Output tensor.
    """
    x = conv(x, filters=filters, kernel_size=kernel_size, stride=stride,
             groups=groups, name=f"{name}_conv", pad_name=f"{name}_pad")
    x = batch_norm(x, name=f"{name}_bn", zero_gamma=zero_gamma,
                   synchronized=synchronized)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def avg_down(x, *, stride, name):
    """ResNet-D shortcut pool: ``AvgPool2d(2, s, ceil_mode=True,
    count_include_pad=False)`` is Keras ``AveragePooling2D(2, s, "same")``."""
    if stride == 1:
        return x
    return layers.AveragePooling2D(2, strides=stride, padding="same", name=name)(x)


def avg_pool_3x3(x, *, stride, name):
    """``AvgPool2d(3, stride, padding=1)`` with ``count_include_pad=True``.

    Keras' ``padding="same"`` leaves the padded zeros out of the mean; PyTorch
    counts them, so the zeros are explicit here.
    """
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=stride, padding="valid", name=name)(x)


def make_divisible(value, divisor=8, min_value=None, round_limit=0.9):
    """timm's ``make_divisible``: nearest multiple of ``divisor`` (half up), at
    least ``min_value`` (default ``divisor``), never more than 10% below ``value``."""
    min_value = min_value or divisor
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if out < round_limit * value:
        out += divisor
    return out


def check_positive_int(name, value):
    """Raises ``ValueError`` naming ``name`` unless ``value`` is an int > 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def check_stages(depths, widths):
    """Validates a spec's per-stage ``depths`` and ``widths`` (non-empty int tuples)."""
    for name, value in (("depths", depths), ("widths", widths)):
        if not isinstance(value, (tuple, list)):
            raise ValueError(
                f"`{name}` must be a tuple of positive integers, one per stage. "
                f"Received: {name}={value!r}")
    if len(depths) == 0 or len(depths) != len(widths):
        raise ValueError(
            "`depths` and `widths` must be non-empty and of equal length. "
            f"Received: depths={depths}, widths={widths}")
    for value in depths:
        check_positive_int("depths", value)
    for value in widths:
        check_positive_int("widths", value)


# timm's argument names for the ResNet class's stage lists.
TIMM_ALIASES = {"layers": "depths", "channels": "widths"}


def check_spec(spec, cls, family):
    """Raises ``ValueError`` unless ``spec`` is ``family``'s own ``Spec`` class ``cls``.

    A family builds only its own specs; another family's spec would fail deep
    inside a block function on a missing field.
    """
    if type(spec) is not cls:
        kind = type(spec)
        raise ValueError(
            f"The {family} family builds a {family}.Spec only. Received: a "
            f"{kind.__module__.rsplit('.', 1)[-1]}.{kind.__qualname__}: spec={spec!r}. "
            "keras_resnext.build(spec) picks the family of any spec.")


def spec_from_config(cls, config):
    """``cls(**config)`` from timm's constructor arguments (e.g. a fixture's JSON).

    Unknown keys are ignored; ``layers``/``channels`` are ``depths``/``widths``;
    timm's nested ``block_args`` (ResNeSt's radix, Res2Net's scale) are flattened;
    lists become tuples (specs are frozen).
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    flat = {**config, **(config.get("block_args") or {})}
    kwargs = {}
    for key, value in flat.items():
        key = TIMM_ALIASES.get(key, key)
        if key in fields:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


# timm's ResNet class: the skeleton of the ResNet, ResNeSt and Res2Net families.
@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """The fields every family built on timm's ``ResNet`` class has.

    A family's ``Spec`` extends it with its own block's fields (and may give a
    field another default); it is not a family's spec itself.

    Attributes:
        depths: blocks per stage.
        widths: "planes" per stage (64, 128, 256, 512 for ImageNet).
        cardinality: groups of the block's 3x3 convolutions (C in ResNeXt).
        base_width: width of one group at ``width == 64`` (d in ResNeXt).
        stem_type: ``""`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3
            convs + max pool, ResNet-D) or ``"cifar"`` (one 3x3/1 conv); the
            family's ``STEM_TYPES`` say which it takes.
        stem_width: width of a deep stem's first convs (outputs w, w, 2w).
            A plain stem has 64 outputs, as in timm, whatever this says.
        avg_down: average-pool then 1x1 conv on projection shortcuts (ResNet-D).
        default_size: default input height/width (that of the weights).
        description: one line for ``list_models`` and the docs.
    """

    STEM_TYPES: typing.ClassVar[tuple] = ("", "deep", "cifar")
    # Smallest input height/width accepted (keras.applications uses 32).
    min_size: typing.ClassVar[int] = 32

    depths: tuple
    widths: tuple = (64, 128, 256, 512)
    cardinality: int = 1
    base_width: int = 64
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    default_size: int = 224
    description: str = ""

    def __post_init__(self):
        check_stages(self.depths, self.widths)
        for name in ("cardinality", "base_width", "stem_width", "default_size"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.avg_down, bool):
            raise ValueError(f"`avg_down` must be a bool. Received: avg_down={self.avg_down!r}")
        if self.stem_type not in self.STEM_TYPES:
            raise ValueError(
                f"`stem_type` must be one of {self.STEM_TYPES}. "
                f"Received: stem_type={self.stem_type!r}")

    @classmethod
    def from_config(cls, config):
        """Builds a Spec from timm's arguments, e.g. a fixture's JSON.

        See ``spec_from_config``.
        """
        return spec_from_config(cls, config)

    def bottleneck_width(self, stage):
        """``floor(widths[stage] * base_width / 64) * cardinality``: the width of
        the grouped 3x3 of ``stage`` (0-based); one split's in Res2Net."""
        return self.widths[stage] * self.base_width // 64 * self.cardinality

    @property
    def stem_stride(self):
        """Downsampling of the stem (4, or 1 for the CIFAR stem)."""
        return 1 if self.stem_type == "cifar" else 4


def projection_shortcut(x, *, out_channels, stride, spec, name, synchronized=False):
    """The block's shortcut: identity, or a 1x1 projection when the stride or
    the width changes (paper option B), after an average pool with
    ``spec.avg_down`` (ResNet-D). Layers ``{name}_0_pool``, ``{name}_0_*``."""
    if stride == 1 and x.shape[bn_axis()] == out_channels:
        return x
    if spec.avg_down:
        x = avg_down(x, stride=stride, name=f"{name}_0_pool")
        stride = 1
    return conv_bn(x, filters=out_channels, kernel_size=1, stride=stride,
                   activation=None, name=f"{name}_0", synchronized=synchronized)


def stem(x, *, spec, synchronized=False):
    """The stem: plain 7x7, deep 3x3 x3 (ResNet-D), or CIFAR 3x3."""
    common_args = dict(synchronized=synchronized)
    if spec.stem_type == "cifar":
        return conv_bn(x, filters=64, kernel_size=3, name="conv1", **common_args)
    if spec.stem_type == "deep":
        w = spec.stem_width
        x = conv_bn(x, filters=w, kernel_size=3, stride=2, name="conv1_1", **common_args)
        x = conv_bn(x, filters=w, kernel_size=3, name="conv1_2", **common_args)
        x = conv_bn(x, filters=2 * w, kernel_size=3, name="conv1_3", **common_args)
    else:
        x = conv_bn(x, filters=64, kernel_size=7, stride=2, name="conv1", **common_args)
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

    The stem, then ``stages`` of ``block_fn``.
    ``spec_cls``/``family``: the family's ``Spec`` class and name (checked).
    """

    def features(inputs, spec, *, zero_init_last_bn=False, synchronized_bn=False):
        """The backbone of ``spec``: ``{"P{level}": stage output}``, deepest last."""
        check_spec(spec, spec_cls, family)
        x = stem(inputs, spec=spec, synchronized=synchronized_bn)
        return stages(x, spec=spec, block_fn=block_fn,
                      zero_init_last_bn=zero_init_last_bn, synchronized=synchronized_bn)

    return features


# Sizes without building (``size.Tally``): the skeleton above, counted.
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


def make_torch_prefix(block_rules):
    """A family's ``torch_prefix`` for timm's ResNet class: ``STEM_RULES``,
    ``SHORTCUT_RULES``, then ``block_rules`` (the block's own layers)."""
    rules = STEM_RULES + SHORTCUT_RULES + tuple(block_rules)

    def torch_prefix(layer_name, spec):
        """The PyTorch (timm) module prefix of a Keras layer of ``spec``, or None."""
        return match_rules(rules, layer_name, ds=1 if spec.avg_down else 0,
                           ds_bn=2 if spec.avg_down else 1)

    return torch_prefix
