"""The builder and model utilities shared by every family.

``build`` takes a registered name or a family spec (``keras_resnext.families``),
validates the keras.applications arguments, lets the family build the
backbone, and adds keras.applications' top (``avg_pool`` + ``predictions``).
The built model carries its spec (``families.spec_of``), also through a ``.keras``
file (``ZooModel``'s config), so that the weight converter and ``pyramid_model``
never parse layer names to recover facts. The named factories
(``ResNeXt50``, ...) are in ``keras_resnext.applications``.
"""

import math
import warnings

import keras
from keras import layers

from keras_resnext import families
from keras_resnext.families import size as size_lib
from keras_resnext import pretrained as pretrained_lib
from keras_resnext import weights as weights_lib
from keras_resnext.zoo_model import PYRAMID_ATTR
from keras_resnext.zoo_model import ZooModel

POOLINGS = (None, "avg", "max")


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
        A ``ZooModel`` (a functional ``keras.Model`` whose ``export()`` writes
        the portable graph).

    Raises:
        ValueError: on a bad argument, or a spec too deep or too large for this
            machine (``keras_resnext.families.size.check``), before any layer
            is built.
    """
    model_name = spec if isinstance(spec, str) else (name or "resnext")
    spec = families.get_spec(spec)
    family = families.family_of(spec)
    parsed = weights_lib.parse(model_name, weights)
    if parsed.pretrained and include_top and classes != 1000:
        raise ValueError(
            "If using `weights='imagenet'` with `include_top=True`, "
            "`classes` should be 1000.  "
            f"Received classes={classes}")
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or isinstance(classes, bool)
                        or classes < 1):
        raise ValueError(
            f"`classes` must be a positive integer. Received: classes={classes!r}")
    _check_input_shape(input_shape)
    # Within microseconds, before a spec that would take minutes to build is built.
    size_lib.check(spec, input_shape=input_shape, classes=classes, include_top=include_top)
    input_shape = obtain_input_shape(
        input_shape, default_size=spec.default_size, min_size=spec.min_size,
        require_flatten=include_top, pretrained=parsed.pretrained)
    if include_top and parsed.value is not None:
        validate_activation(classifier_activation)

    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor

    pyramid = family.features(img_input, spec, zero_init_last_bn=zero_init_last_bn,
                              synchronized_bn=synchronized_bn)
    x = list(pyramid.values())[-1]

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
        inputs = keras.utils.get_source_inputs(input_tensor)
        inputs = inputs[0] if len(inputs) == 1 else inputs
    else:
        inputs = img_input
    model = ZooModel(inputs, x, name=name or model_name)
    setattr(model, families.SPEC_ATTR, spec)
    # Layer names, not tensors: a layer's output is the same in any model of it.
    setattr(model, PYRAMID_ATTR, producer_names(model, pyramid))
    if parsed.kind != "none":
        # The converter sees from the model whether it has a classifier.
        weights_lib.load_weights(model, model_name, parsed)
    return model


def _check_input_shape(input_shape):
    """keras.applications' input_shape errors, with the value received."""
    if input_shape is None:
        return
    message = "`input_shape` must be a tuple of three integers."
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"{message} Received: input_shape={input_shape!r}")
    for dim in input_shape:
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ValueError(
                f"{message} Every dimension must be a positive integer or None. "
                f"Received: input_shape={tuple(input_shape)!r}")


def obtain_input_shape(input_shape, *, default_size, min_size, require_flatten,
                       pretrained):
    """The input shape of a model, as ``keras.applications`` resolves it.

    The same checks, warning and messages as Keras' internal
    ``imagenet_utils.obtain_input_shape`` (not public API), for an
    ``input_shape`` that ``_check_input_shape`` accepted, in the current
    ``keras.config.image_data_format()``.

    Args:
        input_shape: ``None`` or a user-given ``(H, W, C)`` (``(C, H, W)`` for
            ``channels_first``).
        default_size: the default height and width.
        min_size: the smallest height and width accepted.
        require_flatten: the model has a top (needs a static shape).
        pretrained: ImageNet weights will be loaded (3 channels, and the
            default shape when there is a top).

    Returns:
        The input shape (``None`` for free dimensions).

    Raises:
        ValueError: the shape does not suit the weights or the top.
    """
    channels_first = keras.config.image_data_format() == "channels_first"
    channel, spatial = (0, (1, 2)) if channels_first else (-1, (0, 1))

    def shaped(size, channels):
        return (channels, size, size) if channels_first else (size, size, channels)

    channels = 3
    if not pretrained and input_shape:
        channels = input_shape[channel]
        if channels not in {1, 3}:
            warnings.warn(
                "This model usually expects 1 or 3 input channels. However, it was "
                f"passed an input_shape with {channels} input channels.", stacklevel=3)
    default_shape = shaped(default_size, channels)
    if pretrained and require_flatten:
        # ``!=`` as Keras compares: a list is never equal to the default tuple.
        if input_shape is not None and input_shape != default_shape:
            raise ValueError(
                "When setting `include_top=True` and loading `imagenet` weights, "
                f"`input_shape` should be {default_shape}.  "
                f"Received: input_shape={input_shape}")
        return default_shape
    if input_shape:
        if input_shape[channel] != 3 and pretrained:
            raise ValueError(
                f"The input must have 3 channels; Received `input_shape={input_shape}`")
        if any(input_shape[i] is not None and input_shape[i] < min_size for i in spatial):
            raise ValueError(
                f"Input size must be at least {min_size}x{min_size}; "
                f"Received: input_shape={input_shape}")
    elif require_flatten:
        input_shape = default_shape
    else:
        input_shape = shaped(None, 3)
    if require_flatten and None in input_shape:
        raise ValueError(
            "If `include_top` is True, you should specify a static `input_shape`. "
            f"Received: input_shape={input_shape}")
    return input_shape


def validate_activation(classifier_activation):
    """keras.applications' rule for a top with weights: softmax or no activation.

    Raises:
        ValueError: another activation (the message is Keras').
    """
    activation = keras.activations.get(classifier_activation)
    if activation not in {keras.activations.get("softmax"), keras.activations.get(None)}:
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the "
            "`classifier_activation` argument when using pretrained weights, with "
            f"`include_top=True`; Received: classifier_activation={activation}")


def producer_names(model, tensors):
    """``{key: name of the layer of model whose output is tensors[key]}``.

    Raises:
        ValueError: a tensor is not the single output of a layer of ``model``.
    """
    by_output = {id(layer.output): layer.name for layer in model.layers
                 if keras.backend.is_keras_tensor(layer.output)}
    missing = [key for key, tensor in tensors.items() if id(tensor) not in by_output]
    if missing:
        raise ValueError(
            f"Expected feature maps that are layer outputs of model {model.name!r}. "
            f"Received other tensors for: {missing}")
    return {key: by_output[id(tensor)] for key, tensor in tensors.items()}


def pyramid_model(model):
    """A dict-output model of the multi-scale features of ``model``.

    Keys follow keras-hub's ``pyramid_outputs``: ``"P{level}"`` for a stride of
    ``2**level`` (``P2``..``P5`` for ImageNet ResNets, ``P0``..``P2`` for the
    CIFAR ResNeXt-29), values are the outputs of the last block of each stage.

    Args:
        model: a model built by this package (with or without top), or one
            reloaded from its ``.keras`` file.

    Returns:
        A ``keras.Model`` with the same inputs and a dict of feature maps.

    Raises:
        ValueError: ``model`` was not built by this package.
    """
    families.spec_of(model)
    outputs = {level: model.get_layer(layer_name).output
               for level, layer_name in getattr(model, PYRAMID_ATTR).items()}
    return ZooModel(model.input, outputs, name=f"{model.name}_pyramid")


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
    names = sorted(families.registry())
    if pretrained:
        names = [n for n in names if n in pretrained_lib.registry()]
    return names


# Public factory name -> registered architecture: the families' FACTORIES. The
# factories themselves are functions of ``keras_resnext.applications``.
FACTORIES = {e.factory: e.name for e in families.registry().values() if e.factory}


def count_macs(model):
    """Multiply-accumulates of one forward pass (convolutions and dense layers).

    Needs a static input shape. BatchNorm, activations, pooling and
    element-wise ops are left out, as in the paper's FLOP counts; depthwise
    convolutions count ``kh * kw`` per output element.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, channels, multiplier = layer.kernel.shape
            out_h, out_w = (layer.output.shape[1:3]
                            if layer.data_format == "channels_last"
                            else layer.output.shape[2:4])
            total += out_h * out_w * kh * kw * channels * multiplier
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            out_h, out_w = (layer.output.shape[1:3]
                            if layer.data_format == "channels_last"
                            else layer.output.shape[2:4])
            total += out_h * out_w * kh * kw * cin_per_group * cout
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total
