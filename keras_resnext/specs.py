"""Architectures as data: the names of the model registry (``families``).

Kept for the public names ``Spec`` (the ResNet/ResNeXt family's spec),
``VARIANTS`` (every registered model's spec) and ``get_spec``.
"""

from keras_resnext import families
from keras_resnext.families.resnet import STEM_TYPES  # noqa: F401
from keras_resnext.families.resnet import Spec  # noqa: F401

get_spec = families.get_spec
VARIANTS = {name: entry.spec for name, entry in families.registry().items()}
