"""The class of every model this package builds: a functional ``keras.Model``.

It changes two things:

- ``export()`` (Keras' own exporter) traces under ``layers.portable_graph()``,
  so that ``model.export(path)`` writes the same graph as
  ``keras_resnext.export``: one grouped op per grouped convolution (ONNX
  ``Conv`` with ``group=C``), fenced from Grappler's fusions, which runs with
  oneDNN on and off whichever runtime wrote it. Without it, an export from a
  runtime without oneDNN records the blocked formulation (several convolutions
  per grouped one), and one from a oneDNN runtime records bare grouped
  convolutions that only oneDNN can fuse.
- its config carries the spec it was built from (``"spec"``:
  ``families.spec_to_config``) and the layers of its feature pyramid
  (``"pyramid"``), so that a model reloaded from a ``.keras`` file knows its
  architecture (``families.spec_of``, ``pyramid_model``, the weight converter).

Registered, with no ``__init__`` of its own, so ``.keras`` files reload into it.
"""

import keras

from keras_resnext import families
from keras_resnext import layers

# The attribute of a built model that names the layers of its feature pyramid:
# ``{"P{level}": layer name}`` (set by ``keras_resnext.build``).
PYRAMID_ATTR = "_keras_resnext_pyramid"


@keras.saving.register_keras_serializable(package="keras_resnext")
class ZooModel(keras.Model):
    """A functional ``keras.Model`` that writes the portable graph and whose
    config carries its spec."""

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """``keras.Model.export``, traced under ``layers.portable_graph()``."""
        with layers.portable_graph():
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)

    def get_config(self):
        """The functional config, plus ``"spec"`` and ``"pyramid"`` when built
        by ``keras_resnext.build``."""
        config = super().get_config()
        spec = getattr(self, families.SPEC_ATTR, None)
        if spec is not None:
            config["spec"] = families.spec_to_config(spec)
            config["pyramid"] = dict(getattr(self, PYRAMID_ATTR))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The functional model of ``config``, with its spec and pyramid restored."""
        config = dict(config)
        spec = config.pop("spec", None)
        pyramid = config.pop("pyramid", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if spec is not None:
            setattr(model, families.SPEC_ATTR, families.spec_from_config(spec))
            setattr(model, PYRAMID_ATTR, dict(pyramid))
        return model
