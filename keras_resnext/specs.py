"""Public aliases of the registry's names (``keras_resnext.families`` is the registry).

``Spec`` is the ResNet/ResNeXt family's spec (``families.resnet.Spec``);
``VARIANTS`` maps every published model name to its spec; ``get_spec`` is
``families.get_spec``. The package's own code imports ``families``.
"""

from keras_resnext import families
from keras_resnext.families.resnet import STEM_TYPES  # noqa: F401
from keras_resnext.families.resnet import Spec  # noqa: F401

get_spec = families.get_spec
VARIANTS = {name: entry.spec for name, entry in families.registry().items()}
