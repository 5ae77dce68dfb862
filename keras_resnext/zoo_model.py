"""The class of every model this package builds: a functional ``keras.Model``.

It changes one thing: ``export()`` (Keras' own exporter) traces under
``layers.portable_graph()``, so that ``model.export(path)`` writes the same
graph as ``keras_resnext.export``: one grouped op per grouped convolution
(ONNX ``Conv`` with ``group=C``), fenced from Grappler's fusions, which runs
with oneDNN on and off whichever runtime wrote it. Without it, an export
from a runtime without oneDNN records the blocked formulation (several
convolutions per grouped one), and one from a oneDNN runtime records bare
grouped convolutions that only oneDNN can fuse.

Registered, with no ``__init__`` of its own, so ``.keras`` files reload into it.
"""

import keras

from keras_resnext import layers


@keras.saving.register_keras_serializable(package="keras_resnext")
class ZooModel(keras.Model):
    """A functional ``keras.Model`` whose ``export()`` writes the portable graph."""

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """``keras.Model.export``, traced under ``layers.portable_graph()``."""
        with layers.portable_graph():
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
