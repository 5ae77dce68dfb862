"""Building blocks shared by every family: conv + BatchNorm + activation.

One place for the BatchNorm settings and the PyTorch padding rule, so that
every family converts PyTorch weights to the same numbers.
"""

import keras
from keras import layers

from keras_resnext.layers import BatchNorm
from keras_resnext.layers import GroupConv2D

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
    """A convolution with PyTorch padding; ``GroupConv2D`` when ``groups > 1``."""
    x, padding = pad_symmetric(x, kernel_size=kernel_size, stride=stride,
                               name=pad_name or f"{name}_pad")
    conv_cls = GroupConv2D if groups > 1 else layers.Conv2D
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
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    flat = {**config, **(config.get("block_args") or {})}
    kwargs = {}
    for key, value in flat.items():
        key = TIMM_ALIASES.get(key, key)
        if key in fields:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
