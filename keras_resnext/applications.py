"""The named factories, as in ``keras.applications``: ``ResNeXt50(...)`` and the rest.

One function per entry of the families' ``FACTORIES`` (``keras_resnext.model.FACTORIES``).
Each passes its arguments unchanged to ``keras_resnext.build`` with its registered
name (``locals()`` holds exactly the arguments), and its ``weights`` defaults to
``"imagenet"`` where that name has published weights, else to ``None``;
tests/test_factories.py checks both against the registry. The arguments' shared
documentation is appended to every docstring, as keras.applications does.
"""

from keras_resnext.model import build

_ARGUMENTS_DOC = """
    Args:
        include_top: whether to include the classifier at the top of the
            network (global average pool ``avg_pool``, dense ``predictions``).
        weights: ``None`` (random initialization); ``"imagenet"`` (this
            architecture's default pretrained weights, see
            ``keras_resnext.get_pretrained``); a pretrained tag;
            ``"hf-hub:<owner>/<repo>[@revision]"``; or the path of a weights file
            (a Keras ``.weights.h5``, or a PyTorch-layout ``.safetensors``,
            ``.pth`` or ``.pt``, converted on load).
        input_tensor: optional Keras tensor (i.e. output of ``keras.Input()``, or
            of a layer) to use as image input for the model.
        input_shape: optional shape tuple, ``(H, W, 3)`` (``(3, H, W)`` with
            ``channels_first``); with ``include_top=True`` it must be static,
            and with ImageNet weights and a top it must be the default shape.
            Height and width must be no smaller than 32.
        pooling: optional pooling mode for feature extraction when
            ``include_top`` is ``False``: ``None`` (the 4D output of the last
            block), ``"avg"`` (global average pooling, a 2D output) or ``"max"``
            (global max pooling).
        classes: number of classes of the top; 1000 with ImageNet weights.
        classifier_activation: a ``str`` or callable, the activation of the top
            layer; ignored unless ``include_top=True``. ``None`` returns the
            logits. With pretrained weights only ``None`` or ``"softmax"``.
        name: the name of the model; defaults to the registered name.
        zero_init_last_bn: zero-initialise the last BatchNorm scale of every
            block (Goyal et al. 2017), so that each block starts as an identity.
        synchronized_bn: BatchNorm statistics synchronized across replicas.

    Returns:
        A ``keras.Model`` instance.

    Raises:
        ValueError: on a bad argument, before any layer is built.
"""


def _document(factory):
    """Appends the arguments' documentation to ``factory``'s docstring."""
    if factory.__doc__:  # None under ``python -OO``
        factory.__doc__ += _ARGUMENTS_DOC
    return factory


# The resnet family (``keras_resnext.families.resnet``).


@_document
def ResNeXt50(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-50 (32x4d), paper Table 1.

    Registered as ``resnext50_32x4d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext50_32x4d", **locals())


@_document
def ResNeXt101(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-101 (32x4d), paper Table 3.

    Registered as ``resnext101_32x4d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext101_32x4d", **locals())


@_document
def ResNeXt101_32x8d(include_top=True, weights="imagenet", input_tensor=None,
                     input_shape=None, pooling=None, classes=1000,
                     classifier_activation="softmax", name=None, *,
                     zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-101 (32x8d), torchvision/WSL variant.

    Registered as ``resnext101_32x8d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext101_32x8d", **locals())


@_document
def ResNeXt101_64x4d(include_top=True, weights="imagenet", input_tensor=None,
                     input_shape=None, pooling=None, classes=1000,
                     classifier_activation="softmax", name=None, *,
                     zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-101 (64x4d), paper Table 4.

    Registered as ``resnext101_64x4d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext101_64x4d", **locals())


@_document
def ResNeXt50D(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-50-D (32x4d): deep stem, average-pool shortcut.

    Registered as ``resnext50d_32x4d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    - [Bag of Tricks for Image Classification with Convolutional Neural
      Networks](https://arxiv.org/abs/1812.01187) (CVPR 2019)
    """
    return build("resnext50d_32x4d", **locals())


@_document
def ResNeXt29_8x64d(include_top=True, weights=None, input_tensor=None,
                    input_shape=None, pooling=None, classes=1000,
                    classifier_activation="softmax", name=None, *,
                    zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-29 (8x64d) for CIFAR, paper Table 7.

    Registered as ``resnext29_8x64d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext29_8x64d", **locals())


@_document
def ResNeXt29_16x64d(include_top=True, weights=None, input_tensor=None,
                     input_shape=None, pooling=None, classes=1000,
                     classifier_activation="softmax", name=None, *,
                     zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeXt-29 (16x64d) for CIFAR, paper Table 7.

    Registered as ``resnext29_16x64d``.

    Reference:
    - [Aggregated Residual Transformations for Deep Neural Networks](
      https://arxiv.org/abs/1611.05431) (CVPR 2017)
    """
    return build("resnext29_16x64d", **locals())


@_document
def ResNet50(include_top=True, weights="imagenet", input_tensor=None,
             input_shape=None, pooling=None, classes=1000,
             classifier_activation="softmax", name=None, *,
             zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNet-50 baseline (v1.5), paper Table 1.

    Registered as ``resnet50``.

    Reference:
    - [Deep Residual Learning for Image Recognition](
      https://arxiv.org/abs/1512.03385) (CVPR 2016)
    """
    return build("resnet50", **locals())


@_document
def ResNet101(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNet-101 baseline (v1.5).

    Registered as ``resnet101``.

    Reference:
    - [Deep Residual Learning for Image Recognition](
      https://arxiv.org/abs/1512.03385) (CVPR 2016)
    """
    return build("resnet101", **locals())


@_document
def ResNet152(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNet-152 baseline (v1.5).

    Registered as ``resnet152``.

    Reference:
    - [Deep Residual Learning for Image Recognition](
      https://arxiv.org/abs/1512.03385) (CVPR 2016)
    """
    return build("resnet152", **locals())


# The resnest family (``keras_resnext.families.resnest``).


@_document
def ResNeSt14D(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-14d (2s1x64d): deep stem, average-pool shortcut.

    Registered as ``resnest14d``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest14d", **locals())


@_document
def ResNeSt26D(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-26d (2s1x64d): deep stem, average-pool shortcut.

    Registered as ``resnest26d``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest26d", **locals())


@_document
def ResNeSt50(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-50 (2s1x64d), the paper's ResNeSt-50.

    Registered as ``resnest50d``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest50d", **locals())


@_document
def ResNeSt101(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-101 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-101.

    Registered as ``resnest101e``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest101e", **locals())


@_document
def ResNeSt200(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-200 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-200.

    Registered as ``resnest200e``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest200e", **locals())


@_document
def ResNeSt269(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ResNeSt-269 (2s1x64d, 64-wide deep stem), the paper's ResNeSt-269.

    Registered as ``resnest269e``.

    Reference:
    - [ResNeSt: Split-Attention Networks](https://arxiv.org/abs/2004.08955)
      (2020)
    """
    return build("resnest269e", **locals())


# The res2net family (``keras_resnext.families.res2net``).


@_document
def Res2Net50(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates Res2Net-50 (26w x 4s).

    Registered as ``res2net50_26w_4s``.

    Reference:
    - [Res2Net: A New Multi-scale Backbone Architecture](
      https://arxiv.org/abs/1904.01169) (TPAMI 2019)
    """
    return build("res2net50_26w_4s", **locals())


@_document
def Res2Net101(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates Res2Net-101 (26w x 4s).

    Registered as ``res2net101_26w_4s``.

    Reference:
    - [Res2Net: A New Multi-scale Backbone Architecture](
      https://arxiv.org/abs/1904.01169) (TPAMI 2019)
    """
    return build("res2net101_26w_4s", **locals())


@_document
def Res2NeXt50(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates Res2NeXt-50 (8c x 4w x 4s).

    Registered as ``res2next50``.

    Reference:
    - [Res2Net: A New Multi-scale Backbone Architecture](
      https://arxiv.org/abs/1904.01169) (TPAMI 2019)
    """
    return build("res2next50", **locals())


@_document
def Res2Net50D(include_top=True, weights="imagenet", input_tensor=None,
               input_shape=None, pooling=None, classes=1000,
               classifier_activation="softmax", name=None, *,
               zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates Res2Net-50-D (26w x 4s): deep stem, average-pool shortcut.

    Registered as ``res2net50d``.

    Reference:
    - [Res2Net: A New Multi-scale Backbone Architecture](
      https://arxiv.org/abs/1904.01169) (TPAMI 2019)
    - [Bag of Tricks for Image Classification with Convolutional Neural
      Networks](https://arxiv.org/abs/1812.01187) (CVPR 2019)
    """
    return build("res2net50d", **locals())


@_document
def Res2Net101D(include_top=True, weights="imagenet", input_tensor=None,
                input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name=None, *,
                zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates Res2Net-101-D (26w x 4s): deep stem, average-pool shortcut.

    Registered as ``res2net101d``.

    Reference:
    - [Res2Net: A New Multi-scale Backbone Architecture](
      https://arxiv.org/abs/1904.01169) (TPAMI 2019)
    - [Bag of Tricks for Image Classification with Convolutional Neural
      Networks](https://arxiv.org/abs/1812.01187) (CVPR 2019)
    """
    return build("res2net101d", **locals())


# The rexnet family (``keras_resnext.families.rexnet``).


@_document
def ReXNet100(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ReXNet 1.0x (Han et al., CVPR 2021).

    Registered as ``rexnet_100``.

    Reference:
    - [Rethinking Channel Dimensions for Efficient Model Design](
      https://arxiv.org/abs/2007.00992) (CVPR 2021)
    """
    return build("rexnet_100", **locals())


@_document
def ReXNet130(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ReXNet 1.3x (Han et al., CVPR 2021).

    Registered as ``rexnet_130``.

    Reference:
    - [Rethinking Channel Dimensions for Efficient Model Design](
      https://arxiv.org/abs/2007.00992) (CVPR 2021)
    """
    return build("rexnet_130", **locals())


@_document
def ReXNet150(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ReXNet 1.5x (Han et al., CVPR 2021).

    Registered as ``rexnet_150``.

    Reference:
    - [Rethinking Channel Dimensions for Efficient Model Design](
      https://arxiv.org/abs/2007.00992) (CVPR 2021)
    """
    return build("rexnet_150", **locals())


@_document
def ReXNet200(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ReXNet 2.0x (Han et al., CVPR 2021).

    Registered as ``rexnet_200``.

    Reference:
    - [Rethinking Channel Dimensions for Efficient Model Design](
      https://arxiv.org/abs/2007.00992) (CVPR 2021)
    """
    return build("rexnet_200", **locals())


@_document
def ReXNet300(include_top=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None, *,
              zero_init_last_bn=False, synchronized_bn=False):
    """Instantiates ReXNet 3.0x (Han et al., CVPR 2021).

    Registered as ``rexnet_300``.

    Reference:
    - [Rethinking Channel Dimensions for Efficient Model Design](
      https://arxiv.org/abs/2007.00992) (CVPR 2021)
    """
    return build("rexnet_300", **locals())
