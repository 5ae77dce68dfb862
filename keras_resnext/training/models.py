"""The classifiers training and evaluation build: registered or recipe-local architectures."""

from keras_resnext import families
from keras_resnext import model as model_lib
from keras_resnext import weights as weights_lib

IMAGENET_CLASSES = 1000


def known_models():
    """Names ``build_classifier`` accepts."""
    return sorted(families.registry(recipes=True))


def check_known(model_name):
    """Raises ``ValueError`` naming the known models if ``model_name`` is not one."""
    if model_name not in families.registry(recipes=True):
        raise ValueError(
            f"Unknown model. Received: model={model_name!r}. "
            f"Known models: {', '.join(known_models())}")


def build_classifier(model_name, *, num_classes, image_size, weights=None, sync_bn=False,
                     zero_init_last_bn=False):
    """The classifier ``model_name`` (registered or recipe-local architecture).

    Built without weights at ``image_size``, then ``weights`` are loaded with
    ``keras_resnext.weights.load_weights``: a ``.weights.h5`` as is; published
    or PyTorch-layout weights (a tag, ``hf-hub:...``, ``.safetensors``) without
    their classifier when ``num_classes`` is not theirs (fine-tuning), and at
    any input size.

    Args:
        model_name: one of ``known_models()``.
        num_classes: classifier width.
        image_size: input height/width.
        weights: ``None`` or any ``weights=`` value of ``keras_resnext.build``.
        sync_bn: synchronized BatchNorm.
        zero_init_last_bn: zero-initialise the last BN of every block.

    Returns:
        A ``keras.Model`` with a softmax classifier named ``predictions``.
    """
    kwargs = dict(weights=None, classes=num_classes,
                  input_shape=(image_size, image_size, 3),
                  zero_init_last_bn=zero_init_last_bn, synchronized_bn=sync_bn)
    check_known(model_name)
    entry = families.get_entry(model_name)
    if entry.recipe:  # not published: no factory, no weights tags
        model = model_lib.build(entry.spec, name=model_name, **kwargs)
    else:
        model = model_lib.create_model(model_name, **kwargs)
    parsed = weights_lib.parse(model_name, weights)
    if parsed.kind != "none":
        # A Keras file is this model's own; PyTorch-layout weights may need a new head.
        new_head = (not (parsed.path or "").endswith(".h5") and
                    num_classes != IMAGENET_CLASSES)
        weights_lib.load_weights(model, model_name, parsed, skip_head=new_head)
    return model
