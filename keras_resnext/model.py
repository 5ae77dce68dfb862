"""The builder, factories and model utilities shared by every family.

``build`` takes a registered name or a family spec (``keras_resnext.families``),
validates the keras.applications arguments, lets the family build the
backbone, and adds keras.applications' top (``avg_pool`` + ``predictions``).
The built model carries its spec (``families.spec_of``), so that the weight converter
and ``pyramid_model`` never parse layer names to recover facts.
"""

import math

import keras
from keras import layers
from keras.src.applications import imagenet_utils
from keras.src.ops import operation_utils

from keras_resnext import families
from keras_resnext import pretrained as pretrained_lib
from keras_resnext import weights as weights_lib
from keras_resnext.zoo_model import ZooModel

POOLINGS = (None, "avg", "max")
_PYRAMID_ATTR = "_keras_resnext_pyramid"


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
        ValueError: on a bad argument, before any layer is built.
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
    input_shape = imagenet_utils.obtain_input_shape(
        input_shape,
        default_size=spec.default_size,
        min_size=spec.min_size,
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
        weights="imagenet" if parsed.pretrained else parsed.value)
    if include_top:
        imagenet_utils.validate_activation(classifier_activation, parsed.value)

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
        inputs = operation_utils.get_source_inputs(input_tensor)
        inputs = inputs[0] if len(inputs) == 1 else inputs
    else:
        inputs = img_input
    model = ZooModel(inputs, x, name=name or model_name)
    setattr(model, families.SPEC_ATTR, spec)
    # Layer names, not tensors: a layer's output is the same in any model of it.
    setattr(model, _PYRAMID_ATTR, {
        level: tensor._keras_history.operation.name for level, tensor in pyramid.items()})
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


def pyramid_model(model):
    """A dict-output model of the multi-scale features of ``model``.

    Keys follow keras-hub's ``pyramid_outputs``: ``"P{level}"`` for a stride of
    ``2**level`` (``P2``..``P5`` for ImageNet ResNets, ``P0``..``P2`` for the
    CIFAR ResNeXt-29), values are the outputs of the last block of each stage.

    Args:
        model: a model built by this package (with or without top).

    Returns:
        A ``keras.Model`` with the same inputs and a dict of feature maps.

    Raises:
        ValueError: ``model`` was not built by this package.
    """
    families.spec_of(model)
    outputs = {level: model.get_layer(layer_name).output
               for level, layer_name in getattr(model, _PYRAMID_ATTR).items()}
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


def _named_factory(public_name):
    entry = next(e for e in families.registry().values() if e.factory == public_name)
    arch = entry.name
    default_weights = "imagenet" if arch in pretrained_lib.registry() else None

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
        f"Instantiates {entry.spec.description} "
        f"(``{arch}``).\n\n    Arguments are those of ``keras_resnext.model.build``; "
        f"``weights`` defaults to {default_weights!r}.\n")
    return factory


# Public factory name -> registered architecture: the families' FACTORIES.
FACTORIES = {e.factory: e.name for e in families.registry().values() if e.factory}
# One module-level function per factory (``ResNeXt50``, ``ResNeSt50``, ...).
globals().update({public: _named_factory(public) for public in FACTORIES})


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
