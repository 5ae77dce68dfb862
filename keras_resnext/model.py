"""ResNeXt and ResNet builders in the keras.applications style.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
CVPR 2017. The block is the paper's form (c): 1x1, grouped 3x3 with
``groups=cardinality``, 1x1. The stride sits on the grouped 3x3 (ResNet v1.5,
as in the paper and in torchvision/timm), so that converted PyTorch weights
give the same numbers.

Layer names are a contract: they follow keras.applications' ResNet
(``conv2_block1_1_conv``), so feature-extraction code written for
``keras.applications.ResNet50`` keeps working, and the weight converter maps
them to timm/torchvision names with a fixed table (see ``convert.py``).
"""

import math

import keras
from keras import layers
from keras.src.applications import imagenet_utils
from keras.src.ops import operation_utils

from keras_resnext import specs as specs_lib
from keras_resnext import weights as weights_lib
from keras_resnext.layers import BatchNorm
from keras_resnext.layers import GroupConv2D

# PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras 0.9): the
# weights we convert were trained with them.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
POOLINGS = (None, "avg", "max")


def _bn_axis():
    return 3 if keras.config.image_data_format() == "channels_last" else 1


def _conv_initializer():
    # torchvision/timm init: kaiming normal, fan_out, ReLU gain.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal")


def conv_bn(x, *, filters, kernel_size, stride=1, groups=1, relu=True,
            zero_gamma=False, synchronized=False, name):
    """Convolution (symmetric padding, no bias), BatchNorm, optional ReLU.

    PyTorch pads ``k // 2`` on both sides; Keras ``padding="same"`` with stride 2
    pads only after. Explicit ``ZeroPadding2D`` + ``"valid"`` reproduces PyTorch.

    Args:
        x: input tensor.
        filters: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        groups: convolution groups (``GroupConv2D`` when > 1).
        relu: append a ReLU.
        zero_gamma: initialise the BN scale to zero (last BN of a block).
        synchronized: synchronized BatchNorm across replicas.
        name: prefix; layers are ``{name}_pad``, ``_conv``, ``_bn``, ``_relu``.

    Returns:
        Output tensor.
    """
    padding = "valid"
    if kernel_size > 1:
        if stride == 1:
            padding = "same"  # symmetric for odd kernels at stride 1
        else:
            x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    conv_cls = GroupConv2D if groups > 1 else layers.Conv2D
    x = conv_cls(filters, kernel_size, strides=stride, padding=padding,
                 groups=groups, use_bias=False,
                 kernel_initializer=_conv_initializer(), name=f"{name}_conv")(x)
    x = BatchNorm(
        axis=_bn_axis(), epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized, name=f"{name}_bn")(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


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
    in_channels = x.shape[_bn_axis()]
    common = dict(synchronized=synchronized)

    shortcut = x
    if stride != 1 or in_channels != out_channels:
        if spec.avg_down:
            if stride != 1:
                # AvgPool2d(2, s, ceil_mode=True, count_include_pad=False).
                shortcut = layers.AveragePooling2D(
                    2, strides=stride, padding="same", name=f"{name}_0_pool")(x)
            shortcut = conv_bn(shortcut, filters=out_channels, kernel_size=1,
                               relu=False, name=f"{name}_0", **common)
        else:
            shortcut = conv_bn(x, filters=out_channels, kernel_size=1,
                               stride=stride, relu=False, name=f"{name}_0",
                               **common)

    x = conv_bn(x, filters=width, kernel_size=1, name=f"{name}_1", **common)
    x = conv_bn(x, filters=width, kernel_size=3, stride=stride,
                groups=spec.cardinality, name=f"{name}_2", **common)
    x = conv_bn(x, filters=out_channels, kernel_size=1, relu=False,
                zero_gamma=zero_init_last_bn, name=f"{name}_3", **common)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def stem(x, *, spec, synchronized=False):
    """The stem: plain 7x7, deep 3x3 x3 (ResNet-D), or CIFAR 3x3."""
    common = dict(synchronized=synchronized)
    if spec.stem_type == "cifar":
        return conv_bn(x, filters=64, kernel_size=3, name="conv1", **common)
    if spec.stem_type == "deep":
        w = spec.stem_width
        x = conv_bn(x, filters=w, kernel_size=3, stride=2, name="conv1_1", **common)
        x = conv_bn(x, filters=w, kernel_size=3, name="conv1_2", **common)
        x = conv_bn(x, filters=2 * w, kernel_size=3, name="conv1_3", **common)
    else:
        x = conv_bn(x, filters=64, kernel_size=7, stride=2, name="conv1", **common)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def stage_output_names(spec):
    """Names of the layers that end each stage (``conv{k}_block{n}_out``)."""
    return [f"conv{stage + 2}_block{depth}_out"
            for stage, depth in enumerate(spec.depths)]


def build(spec, *, include_top=True, weights=None, input_tensor=None,
          input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name=None, zero_init_last_bn=False,
          synchronized_bn=False):
    """Builds a model from a ``Spec`` or a registered name.

    Arguments and validation follow ``keras.applications.ResNet50`` (same
    order, same messages); unlike it, an unknown ``pooling`` raises.

    Args:
        spec: a registered model name (see ``list_models()``) or a ``Spec``.
        include_top: include the global-pool + dense classifier.
        weights: ``None`` (random init), ``"imagenet"``, a pretrained tag, or
            a path to a weights file (see ``keras_resnext.weights``).
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional ``(H, W, C)``; must be static with a top.
        pooling: ``None``, ``"avg"`` or ``"max"`` when ``include_top=False``.
        classes: number of classes of the top.
        classifier_activation: activation of the top (``None`` for logits).
        name: model name; defaults to the registered name.
        zero_init_last_bn: zero-initialise the last BN scale of every block
            (Goyal et al. 2017), so each block starts as an identity.
        synchronized_bn: synchronized BatchNorm across replicas.

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: on a bad argument, before any layer is built.
    """
    model_name = spec if isinstance(spec, str) else (name or "resnext")
    spec = specs_lib.get_spec(spec)
    weights_lib.validate_weights_argument(weights, model_name)
    pretrained = weights_lib.is_pretrained(weights)
    if pretrained and include_top and classes != 1000:
        raise ValueError(
            "If using `weights='imagenet'` with `include_top=True`, "
            "`classes` should be 1000.  "
            f"Received classes={classes}")
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    input_shape = imagenet_utils.obtain_input_shape(
        input_shape,
        default_size=spec.default_size,
        min_size=spec.min_size,
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
        weights="imagenet" if pretrained else weights)
    if include_top:
        imagenet_utils.validate_activation(classifier_activation, weights)

    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor

    x = stem(img_input, spec=spec, synchronized=synchronized_bn)
    for stage, depth in enumerate(spec.depths):
        for block in range(depth):
            x = bottleneck(
                x, stage=stage, stride=2 if stage > 0 and block == 0 else 1,
                spec=spec, name=f"conv{stage + 2}_block{block + 1}",
                zero_init_last_bn=zero_init_last_bn,
                synchronized=synchronized_bn)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 even under a mixed-precision policy: stable softmax/loss.
        x = layers.Dense(classes, activation=classifier_activation,
                         dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    if input_tensor is not None:
        inputs = operation_utils.get_source_inputs(input_tensor)
        inputs = inputs[0] if len(inputs) == 1 else inputs
    else:
        inputs = img_input
    model = keras.Model(inputs, x, name=name or model_name)
    if weights is not None:
        # The converter sees from the model whether it has a classifier.
        weights_lib.load_weights(model, model_name, weights)
    return model


def pyramid_model(model):
    """A dict-output model of the multi-scale features of ``model``.

    Keys follow keras-hub's ``pyramid_outputs``: ``"P{level}"`` for a stride of
    ``2**level`` (``P2``..``P5`` for ImageNet models, ``P0``..``P2`` for the CIFAR
    ResNeXt-29), values are the outputs of the last block of each stage.

    Args:
        model: a model built by this package (with or without top).

    Returns:
        A ``keras.Model`` with the same inputs and a dict of feature maps.

    Raises:
        ValueError: if ``model`` has no stage outputs with the expected names.
    """
    last = {}
    for layer in model.layers:
        parts = layer.name.split("_")
        if (len(parts) == 3 and parts[0].startswith("conv") and
                parts[1].startswith("block") and parts[2] == "out"):
            last[int(parts[0][4:])] = layer
    if not last:
        raise ValueError(
            "`model` has no stage outputs named like 'conv2_block3_out'. "
            f"Received: model={model.name!r}")
    names = {layer.name for layer in model.layers}
    stem_stride = 4 if "pool1_pool" in names else 1
    outputs = {}
    for stage, layer in sorted(last.items()):
        level = int(math.log2(stem_stride)) + stage - 2
        outputs[f"P{level}"] = layer.output
    return keras.Model(model.input, outputs, name=f"{model.name}_pyramid")


def create_model(name, **kwargs):
    """Builds a registered model by name, timm-style.

    Args:
        name: one of ``list_models()``.
        **kwargs: arguments of ``build`` (``weights`` defaults to ``None``).

    Returns:
        A ``keras.Model``.
    """
    return build(name, **kwargs)


def list_models(pretrained=False):
    """Registered model names, sorted.

    Args:
        pretrained: only the architectures with published ImageNet weights.
    """
    names = sorted(specs_lib.VARIANTS)
    if pretrained:
        names = [n for n in names if n in weights_lib.registry()]
    return names


def _named_factory(public_name, arch):
    default_weights = "imagenet" if arch in weights_lib.registry() else None

    def factory(include_top=True, weights=default_weights, input_tensor=None,
                input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name=None, **kwargs):
        return build(arch, include_top=include_top, weights=weights,
                     input_tensor=input_tensor, input_shape=input_shape,
                     pooling=pooling, classes=classes,
                     classifier_activation=classifier_activation, name=name,
                     **kwargs)

    factory.__name__ = factory.__qualname__ = public_name
    factory.__doc__ = (
        f"Instantiates {specs_lib.VARIANTS[arch].description} "
        f"(``{arch}``).\n\n    Arguments are those of ``keras_resnext.model.build``; "
        f"``weights`` defaults to {default_weights!r}.\n")
    return factory


# Public factory name -> registered architecture; every architecture has one.
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
ResNeXt50 = _named_factory("ResNeXt50", FACTORIES["ResNeXt50"])
ResNeXt101 = _named_factory("ResNeXt101", FACTORIES["ResNeXt101"])
ResNeXt101_32x8d = _named_factory("ResNeXt101_32x8d", FACTORIES["ResNeXt101_32x8d"])
ResNeXt101_64x4d = _named_factory("ResNeXt101_64x4d", FACTORIES["ResNeXt101_64x4d"])
ResNeXt50D = _named_factory("ResNeXt50D", FACTORIES["ResNeXt50D"])
ResNeXt29_8x64d = _named_factory("ResNeXt29_8x64d", FACTORIES["ResNeXt29_8x64d"])
ResNeXt29_16x64d = _named_factory("ResNeXt29_16x64d", FACTORIES["ResNeXt29_16x64d"])
ResNet50 = _named_factory("ResNet50", FACTORIES["ResNet50"])
ResNet101 = _named_factory("ResNet101", FACTORIES["ResNet101"])
ResNet152 = _named_factory("ResNet152", FACTORIES["ResNet152"])


def count_macs(model):
    """Multiply-accumulates of one forward pass (convolutions and dense layers).

    Needs a static input shape. BatchNorm, activations and pooling are left
    out, as in the paper's FLOP counts.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            out_h, out_w = (layer.output.shape[1:3]
                            if layer.data_format == "channels_last"
                            else layer.output.shape[2:4])
            total += out_h * out_w * kh * kw * cin_per_group * cout
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total
