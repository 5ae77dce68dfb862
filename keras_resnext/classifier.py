"""A pretrained classifier: model, weights and the transform they expect, together."""

import dataclasses

from keras_resnext import model as model_lib
from keras_resnext import preprocessing
from keras_resnext import families
from keras_resnext import weights as weights_lib


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A softmax classifier with weights and the preprocessing they expect.

    Attributes:
        model: ``keras.Model`` mapping preprocessed ``(N, size, size, 3)``
            images to class probabilities.
        transform: the ``preprocessing.EvalTransform`` of the weights.
        labels: one ``(id, name)`` per class (WordNet ids for ImageNet).
        weights: the parsed ``weights_lib.Weights``.
        loaded: the ``weights_lib.LoadResult`` of the weights.
    """

    model: object
    transform: preprocessing.EvalTransform
    labels: list
    weights: weights_lib.Weights
    loaded: weights_lib.LoadResult

    def preprocess(self, image):
        """One decoded 0-255 ``(H, W, 3)`` image -> the model's input (TF ops)."""
        return self.transform(image)


def build_classifier(arch, weights="imagenet", *, spec=None, classes=None, size=None,
                     crop_pct=None, interpolation=None, labels=None, registry=None):
    """Builds a model for ``arch``, loads ``weights``, and picks its eval transform.

    The transform is the one of the weights' entry (timm's test size and crop);
    explicit ``size``/``crop_pct``/``interpolation`` override it; weights with
    no entry (a local file) use timm's defaults at the spec's default size. The
    model is built at the transform's size, which may differ from 224 (global
    pooling makes the classifier size-independent).

    Args:
        arch: registered architecture name (also the label of a custom spec).
        weights: anything ``weights_lib.parse`` accepts, except None.
        spec: a ``Spec`` to build instead of the registered ``arch``.
        classes: classifier width (default 1000).
        size: evaluation size override.
        crop_pct: center-crop fraction override.
        interpolation: resize interpolation override.
        labels: class names (default: ImageNet names for 1000 classes, else
            ``class_<i>``).
        registry: as in ``weights_lib.load_weights``.

    Returns:
        A ``Classifier``.

    Raises:
        ValueError: bad arguments, unknown tag, or weights that do not fit.
        FileNotFoundError: no network and no cached download.
    """
    spec = spec or families.get_spec(arch)
    classes = 1000 if classes is None else classes
    parsed = weights_lib.parse(arch, weights, registry=registry)
    if parsed.kind == "none":
        raise ValueError("A classifier needs weights. Received: weights=None")
    transform = parsed.eval_transform(default_size=spec.default_size).replace(
        size=size, crop_pct=crop_pct, interpolation=interpolation)
    if labels is None:
        labels = (preprocessing.imagenet_classes() if classes == 1000 else
                  [(str(i), f"class_{i}") for i in range(classes)])
    if len(labels) != classes:
        raise ValueError(f"Got {len(labels)} labels for {classes} classes.")
    model = model_lib.build(spec, weights=None, classes=classes, name=arch,
                            input_shape=(transform.size, transform.size, 3),
                            classifier_activation="softmax")
    loaded = weights_lib.load_weights(model, arch, parsed, registry=registry)
    return Classifier(model, transform, list(labels), parsed, loaded)


def outputs_probabilities(model):
    """Whether the model ends in a softmax (else it returns logits)."""
    import keras

    activation = getattr(model.layers[-1], "activation", None)
    if activation is keras.activations.softmax:
        return True
    if activation in (None, keras.activations.linear):
        return False
    raise ValueError(
        "Export needs a classifier ending in softmax or in logits "
        "(classifier_activation='softmax' or None). Received: final activation "
        f"{getattr(activation, '__name__', activation)!r}")
