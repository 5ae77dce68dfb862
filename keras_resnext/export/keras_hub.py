"""keras-hub: the classifier as a keras-hub preset folder, reloaded and run for the check.

The preset is ``keras_resnext.keras_hub``'s (``ResNeXtImageClassifier`` with
the export's evaluation transform as its preprocessor); the check reloads it
with keras-hub's base class, as a user would, and runs it on the validation
images.
"""

import numpy as np

from keras_resnext.export.config import probabilities_fn


def write_preset(model, path, *, spec, transform):
    """Writes ``model`` (a classifier of ``spec``) as a keras-hub preset folder.

    Args:
        model: the Keras classifier.
        path: the preset folder (written atomically).
        spec: the model's spec (``families.spec_of`` of the model exported).
        transform: the ``EvalTransform`` the preset's preprocessor applies.
    """
    from keras_resnext import keras_hub as hub_lib

    hub_lib.from_keras_model(model, transform, spec=spec).save_to_preset(path)


def preset_runner(path, transform):
    """``images -> probabilities`` of the preset loaded by keras-hub's ``ImageClassifier``.

    The images are eval-transformed 0-255 ``(N, S, S, 3)`` arrays, as for the
    other formats: the classifier runs on them normalised (its preprocessor's
    resize and crop are for raw images). ``run.transform_matches`` says
    whether the preset's preprocessor holds ``transform``.
    """
    import keras_hub

    from keras_resnext import keras_hub as hub_lib  # registers the classes

    task = keras_hub.models.ImageClassifier.from_preset(path)
    probabilities = probabilities_fn(task, transform)

    def run(images):
        return np.asarray(probabilities(np.asarray(images, "float32")))

    converter = task.preprocessor.image_converter
    run.transform_matches = (isinstance(converter, hub_lib.ResNeXtImageConverter)
                             and converter.transform == transform)
    return run
