"""keras-hub classes for every model of this package: backbone, classifier, presets.

The entry point is ``import keras_resnext.keras_hub`` (it needs the ``[hub]``
extra); importing it registers the classes with Keras, after which keras-hub's
own ``keras_hub.models.Backbone.from_preset(dir)`` and
``keras_hub.models.ImageClassifier.from_preset(dir)`` load this package's
presets. ``import keras_resnext`` alone never imports keras-hub.

- ``ResNeXtBackbone``: a ``FeaturePyramidBackbone`` for a spec of any family
  (ResNeXt/ResNet, ResNeSt, Res2Net, ReXNet), built by the family's
  ``features``, the builder under ``keras_resnext.build``: same layer names
  and weights as ``build(..., include_top=False)``; ``pyramid_outputs`` are
  the family's levels (``P2``..``P5`` for ImageNet models), so keras-hub's
  detectors (``RetinaNet``) and segmenters take it.
- ``ResNeXtImageConverter``: the weights entry's ``EvalTransform`` (resize
  the short side, center crop, normalise) as a keras-hub ``ImageConverter``.
- ``ResNeXtImageClassifier`` and its preprocessor: keras-hub's
  ``ImageClassifier`` on that backbone.
- ``to_preset``: any registered pretrained tag or weights file -> a preset
  folder; ``from_timm``: a timm name (``"resnext50_32x4d.tv2_in1k"``) ->
  classifier, through this package's converter (keras-hub has no public way
  to register a converter for its base classes' ``from_preset``; this
  package's classes' ``from_preset`` accept those names).

See docs/keras_hub.md.
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading

from keras_resnext import extras

extras.require("hub", "The keras-hub integration (keras_resnext.keras_hub)")

import keras  # noqa: E402
import keras_hub  # noqa: E402

from keras_resnext import classifier as classifier_lib  # noqa: E402
from keras_resnext import families  # noqa: E402
from keras_resnext import files  # noqa: E402
from keras_resnext import model as model_lib  # noqa: E402
from keras_resnext import preprocessing  # noqa: E402
from keras_resnext import pretrained  # noqa: E402
from keras_resnext import weights as weights_lib  # noqa: E402

PACKAGE = "keras_resnext"
# Files of a keras-hub preset folder that loading needs (keras-hub's
# KerasPresetSaver writes them, with metadata.json and image_converter.json).
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
TASK_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
PREPROCESSOR_FILE = "preprocessor.json"
HEAD_LAYER = "predictions"


def _registered_name(cls_name):
    return f"{PACKAGE}>{cls_name}"


@contextlib.contextmanager
def _layers_dtype(dtype):
    """Every layer made inside gets the policy ``dtype``, as keras-hub gives
    each of its layers ``dtype=dtype``.

    Keras' policy is per thread, so this is the per-layer argument without
    threading it through every family's block functions: the families build
    their layers with the default policy, which is ``dtype`` here.
    """
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _as_spec(spec):
    """A spec from a spec, a registered name or a ``spec_to_config`` dict."""
    if isinstance(spec, dict):
        return families.spec_from_config(spec)
    return families.get_spec(spec)


def _check_image_shape(image_shape, spec):
    message = ("`image_shape` must be (height, width, 3), each size None or an integer "
               f">= {spec.min_size}.")
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3 or \
            image_shape[2] != 3:
        raise ValueError(f"{message} Received: image_shape={image_shape!r}")
    for size in image_shape[:2]:
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)
                                 or size < spec.min_size):
            raise ValueError(f"{message} Received: image_shape={tuple(image_shape)!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNeXtBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A keras-hub backbone for a model of this package, any family.

    Built by the family's ``features`` (the builder of ``keras_resnext.build``),
    so the layers, their names and weights are those of
    ``keras_resnext.build(spec, include_top=False)``. The output is the last
    feature map; ``pyramid_outputs`` maps ``"P{level}"`` (stride ``2**level``)
    to each stage's output.

    Args:
        spec: a registered model name (``"resnext50_32x4d"``), a spec of any
            family, or its ``families.spec_to_config`` dict.
        image_shape: input shape without the batch size.
        dtype: ``None``, a dtype or a ``keras.DTypePolicy`` for every layer.
        **kwargs: ``keras_hub.models.Backbone`` arguments (``name``, ...).

    Example:

    ```python
    backbone = ResNeXtBackbone("resnext50_32x4d")
    features = keras.Model(backbone.input, backbone.pyramid_outputs)
    ```
    """

    def __init__(self, spec, image_shape=(None, None, 3), dtype=None, **kwargs):
        spec = _as_spec(spec)
        _check_image_shape(image_shape, spec)
        with _layers_dtype(dtype):
            inputs = keras.layers.Input(shape=tuple(image_shape))
            pyramid = families.family_of(spec).features(inputs, spec)
        super().__init__(inputs=inputs, outputs=list(pyramid.values())[-1], dtype=dtype,
                         **kwargs)
        self.spec = spec
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = pyramid
        # The weight converter and ``families.spec_of`` read the spec from here.
        setattr(self, families.SPEC_ATTR, spec)

    def get_config(self):
        config = super().get_config()
        config.update(spec=families.spec_to_config(self.spec),
                      image_shape=list(self.image_shape))
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's ``from_preset``, plus the names this package knows.

        ``preset`` may also be a timm name (``"resnext50_32x4d.tv2_in1k"``,
        ``"hf://timm/resnext50_32x4d.tv2_in1k"``): the weights go through this
        package's converter (``from_timm``). A local folder is checked first
        (``check_preset``).
        """
        if timm_name(preset):
            return from_timm(preset, load_weights=load_weights).backbone
        if isinstance(preset, (str, os.PathLike)) and os.path.exists(preset):
            check_preset(preset)
        return super().from_preset(preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """keras-hub's ``save_to_preset``, written to a temporary folder first."""
        with _staged_preset(preset_dir) as staging:
            super().save_to_preset(staging, max_shard_size=max_shard_size)


# The ImageConverter fields that the transform determines (not in our config).
_DERIVED_CONVERTER_KEYS = ("image_size", "scale", "offset", "interpolation", "antialias",
                           "crop_to_aspect_ratio", "pad_to_aspect_ratio",
                           "bounding_box_format")


def _as_transform(transform):
    if isinstance(transform, preprocessing.EvalTransform):
        return transform
    if isinstance(transform, dict):
        try:
            return preprocessing.EvalTransform(**transform)
        except TypeError:  # unknown or missing fields
            pass
    raise ValueError(
        "`transform` must be a keras_resnext.EvalTransform or its to_dict(). "
        f"Received: transform={transform!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNeXtImageConverter(keras_hub.layers.ImageConverter):
    """The weights' ``EvalTransform`` as a keras-hub ``ImageConverter``.

    Raw 0-255 RGB images (one ``(H, W, 3)`` image, a batch, or a list of
    images of any sizes) -> model inputs: the short side resized to
    ``floor(size / crop_pct)`` as PIL does and a center crop of ``size``
    (``EvalTransform.resize_crop``), then the transform's mean/std. TensorFlow
    ops throughout, so that it runs eagerly on every backend and inside the
    ``tf.data`` pipeline of keras-hub's ``predict``/``fit``; eager calls
    return a tensor of the Keras backend.

    Args:
        transform: a ``keras_resnext.EvalTransform`` or its ``to_dict()``.
        **kwargs: ``keras.layers.Layer`` arguments.
    """

    backbone_cls = ResNeXtBackbone

    def __init__(self, transform, **kwargs):
        transform = _as_transform(transform)
        # The parent resizes and scales nothing: ``call`` does the whole transform.
        super().__init__(image_size=None, interpolation=transform.interpolation, **kwargs)
        self.transform = transform

    @property
    def image_size(self):
        """``(size, size)``: the output of the center crop."""
        return (self.transform.size, self.transform.size)

    @image_size.setter
    def image_size(self, value):
        if value is None or len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                f"`image_size` must be (size, size): the transform's center crop is "
                f"square. Received: image_size={value!r}")
        self.transform = self.transform.replace(size=int(value[0]))

    def call(self, inputs):
        import tensorflow as tf

        images = self._resize_crop(inputs)
        # ``EvalTransform.normalize`` (preprocess_input) in TensorFlow ops: it
        # uses keras.ops, which cannot run inside tf.data under JAX or PyTorch.
        mean = tf.constant(self.transform.mean, tf.float32)
        std = tf.constant(self.transform.std, tf.float32)
        images = (images / 255.0 - mean) / std
        if tf.inside_function():  # tf.data or a tf.function: stay in TensorFlow
            return images
        return keras.ops.convert_to_tensor(images.numpy())

    def _resize_crop(self, inputs):
        import tensorflow as tf

        if isinstance(inputs, (list, tuple)):  # images of different sizes
            return tf.stack([self._resize_crop(image) for image in inputs])
        if not isinstance(inputs, tf.Tensor):
            inputs = tf.convert_to_tensor(keras.ops.convert_to_numpy(inputs))
        if inputs.shape.rank == 3:
            return self.transform.resize_crop(inputs)
        size = self.transform.size
        return tf.map_fn(self.transform.resize_crop, inputs,
                         fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))

    def get_config(self):
        config = super().get_config()
        for key in _DERIVED_CONVERTER_KEYS:
            config.pop(key, None)
        config["transform"] = self.transform.to_dict()
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNeXtImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """keras-hub's ``ImageClassifierPreprocessor`` with a ``ResNeXtImageConverter``."""

    backbone_cls = ResNeXtBackbone
    image_converter_cls = ResNeXtImageConverter


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNeXtImageClassifier(keras_hub.models.ImageClassifier):
    """keras-hub's ``ImageClassifier`` on a ``ResNeXtBackbone``.

    The head (global average pool, ``predictions``) is the one of
    ``keras_resnext.build``; ``from_keras_model`` copies a built classifier
    into it.
    """

    backbone_cls = ResNeXtBackbone
    preprocessor_cls = ResNeXtImageClassifierPreprocessor

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's ``from_preset``, plus timm names (see ``ResNeXtBackbone.from_preset``)."""
        if timm_name(preset):
            return from_timm(preset, load_weights=load_weights)
        if isinstance(preset, (str, os.PathLike)) and os.path.exists(preset):
            check_preset(preset, task="num_classes" not in kwargs)
        return super().from_preset(preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """keras-hub's ``save_to_preset``, written to a temporary folder first."""
        with _staged_preset(preset_dir) as staging:
            super().save_to_preset(staging, max_shard_size=max_shard_size)


def scale_offset(transform):
    """keras-hub's ``ImageConverter(scale=..., offset=...)`` for ``transform``'s mean/std.

    For keras-hub tasks with their own converter (a detector's
    ``RetinaNetImageConverter``): 0-255 pixels times ``scale`` plus
    ``offset`` are ``(x / 255 - mean) / std``, the normalisation the weights
    expect.

    Returns:
        ``{"scale": [3 floats], "offset": [3 floats]}``.
    """
    return {"scale": [1.0 / (255.0 * s) for s in transform.std],
            "offset": [-m / s for m, s in zip(transform.mean, transform.std)]}


# --------------------------------------------------------------------------
# Preset folders: written atomically, checked before loading.

_staging = threading.local()


@contextlib.contextmanager
def _staged_preset(preset_dir):
    """Yields a temporary folder that replaces ``preset_dir`` on success.

    Files already in ``preset_dir`` are kept unless rewritten (keras-hub's
    saves add to a folder). Nested saves (a task saves its backbone) write
    into the outer staging folder.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if getattr(_staging, "root", None) == preset_dir:
        yield preset_dir
        return
    if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
        raise ValueError(f"The preset path is a file, not a folder: {preset_dir!r}")
    files.check_writable_dir(os.path.dirname(preset_dir), name="preset_dir")
    parent = os.path.dirname(preset_dir)
    with files.writing("the preset", preset_dir):
        os.makedirs(parent, exist_ok=True)
        root = tempfile.mkdtemp(prefix=".tmp-preset-", dir=parent)
        try:
            if os.path.isdir(preset_dir):
                shutil.copytree(preset_dir, root, dirs_exist_ok=True)
            _staging.root = root
            try:
                yield root
            finally:
                _staging.root = None
            _replace_dir(root, preset_dir)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _replace_dir(src, dst):
    """Renames folder ``src`` onto ``dst``, an existing ``dst`` moved aside first."""
    old = None
    if os.path.exists(dst):
        old = tempfile.mkdtemp(prefix=".tmp-replaced-", dir=os.path.dirname(dst))
        os.replace(dst, os.path.join(old, "preset"))
    os.replace(src, dst)
    os.chmod(dst, 0o755)  # mkdtemp makes 0700
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _read_preset_json(preset_dir, name, what):
    path = os.path.join(preset_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The preset folder {preset_dir!r} has no {name} ({what}). Expected a "
            "preset written by save_to_preset (keras_resnext.keras_hub.to_preset).")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read {path!r} as JSON ({what}): {e}") from None


def _check_class(config, path, cls):
    expected = _registered_name(cls.__name__)
    found = config.get("registered_name") if isinstance(config, dict) else None
    if found != expected:
        raise ValueError(
            f"{path!r} holds a {found!r}, not a keras-resnext model: expected "
            f"registered_name {expected!r}. Load another package's preset with its "
            "own classes (keras_hub.models.Backbone.from_preset).")


def check_preset(preset_dir, *, task=False):
    """Checks a local preset folder of this package before loading it.

    Args:
        preset_dir: the folder.
        task: also require the classifier's files (task config and head
            weights, preprocessor).

    Raises:
        FileNotFoundError: a missing folder or file (named, with what it holds).
        ValueError: a file that is not JSON, a class of another package, or a
            spec of an unknown family (the file and the expected values named).
    """
    preset_dir = os.fspath(preset_dir)
    if not os.path.isdir(preset_dir):
        raise FileNotFoundError(f"Preset folder not found: {preset_dir!r}")
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    config = _read_preset_json(preset_dir, CONFIG_FILE, "the backbone config")
    _check_class(config, config_path, ResNeXtBackbone)
    spec = (config.get("config") or {}).get("spec")
    try:
        families.spec_from_config(spec)
    except ValueError as e:
        raise ValueError(f"{config_path!r}: config.spec is not a model spec: {e}") from None
    if not any(os.path.isfile(os.path.join(preset_dir, name))
               for name in (WEIGHTS_FILE, SHARDED_WEIGHTS_FILE)):
        raise FileNotFoundError(
            f"The preset folder {preset_dir!r} has no {WEIGHTS_FILE} (the backbone "
            "weights).")
    if not task:
        return
    _check_class(_read_preset_json(preset_dir, TASK_FILE, "the classifier config"),
                 os.path.join(preset_dir, TASK_FILE), ResNeXtImageClassifier)
    if not os.path.isfile(os.path.join(preset_dir, TASK_WEIGHTS_FILE)):
        raise FileNotFoundError(
            f"The preset folder {preset_dir!r} has no {TASK_WEIGHTS_FILE} (the "
            "classifier head's weights).")
    _check_class(_read_preset_json(preset_dir, PREPROCESSOR_FILE, "the preprocessor"),
                 os.path.join(preset_dir, PREPROCESSOR_FILE),
                 ResNeXtImageClassifierPreprocessor)


# --------------------------------------------------------------------------
# From this package's models and weights.


def copy_weights(source, target):
    """Copies the weights of ``source``'s layers into ``target``'s, by layer name.

    Raises:
        ValueError: a layer of ``target`` with weights has no namesake in ``source``.
    """
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in by_name:
            raise ValueError(
                f"Layer {layer.name!r} of {target.name!r} has no namesake in "
                f"{source.name!r}: not the same architecture.")
        layer.set_weights(by_name[layer.name].get_weights())


def from_keras_model(model, transform, *, spec=None):
    """A ``ResNeXtImageClassifier`` with the weights of a built classifier.

    Args:
        model: a classifier built by ``keras_resnext.build`` (with its top).
        transform: the ``EvalTransform`` of its weights (the preprocessor).
        spec: the model's spec (default: the one it carries).

    Returns:
        The classifier, with a ``ResNeXtImageClassifierPreprocessor``; same
        outputs (softmax or logits) as ``model``.
    """
    spec = spec or families.spec_of(model)
    head = model.get_layer(HEAD_LAYER)
    backbone = ResNeXtBackbone(spec, name=f"{model.name}_backbone")
    copy_weights(model, backbone)
    preprocessor = ResNeXtImageClassifierPreprocessor(
        image_converter=ResNeXtImageConverter(transform))
    task = ResNeXtImageClassifier(
        backbone=backbone, num_classes=head.units, preprocessor=preprocessor,
        activation="softmax" if classifier_lib.outputs_probabilities(model) else None,
        name=model.name)
    task.output_dense.set_weights(head.get_weights())
    return task


def from_weights(model_name, weights="imagenet", *, spec=None, classes=None, size=None,
                 registry=None):
    """A ``ResNeXtImageClassifier`` of a pretrained tag or a weights file.

    The classifier of ``keras_resnext.build_classifier`` (softmax, the
    weights entry's transform), as keras-hub classes.

    Args:
        model_name: a registered name, or the label of ``spec``.
        weights: ``"imagenet"``, a pretrained tag, ``"hf-hub:..."`` or a file.
        spec: a spec to build instead of the registered ``model_name``.
        classes: classifier width (default: the weights entry's, else 1000).
        size, registry: as in ``keras_resnext.build_classifier``.
    """
    if classes is None:
        entry = weights_lib.parse(model_name, weights, registry=registry).entry
        classes = entry.num_classes if entry else None
    built = classifier_lib.build_classifier(
        model_name, weights, spec=spec, classes=classes, size=size, registry=registry)
    return from_keras_model(built.model, built.transform, spec=spec)


def to_preset(model_name, weights="imagenet", out_dir=None, *, spec=None, classes=None,
              size=None, registry=None):
    """Writes a keras-hub preset of a pretrained tag or a weights file.

    The preset holds the classifier (``from_weights``), its backbone and the
    weights entry's evaluation transform; keras-hub's
    ``ImageClassifier.from_preset(out_dir)`` and ``Backbone.from_preset``
    load it once ``keras_resnext.keras_hub`` is imported.

    Args:
        model_name: a registered name, or the label of ``spec``.
        weights: ``"imagenet"``, a pretrained tag, ``"hf-hub:..."`` or a file.
        out_dir: the preset folder (replaced atomically).
        spec, classes, size, registry: as in ``from_weights``.

    Returns:
        The ``ResNeXtImageClassifier`` written.

    Example:

    ```python
    import keras_resnext.keras_hub
    keras_resnext.keras_hub.to_preset("resnext50_32x4d", "tv2_in1k", "presets/resnext50")
    keras_hub.upload_preset("hf://<user>/resnext50_32x4d", "presets/resnext50")
    ```
    """
    if out_dir is None:
        raise ValueError("`out_dir` (the preset folder) is required. Received: out_dir=None")
    task = from_weights(model_name, weights, spec=spec, classes=classes, size=size,
                        registry=registry)
    task.save_to_preset(out_dir)
    return task


def timm_name(preset):
    """``(arch, tag)`` of a timm name this package knows, else None.

    ``"resnext50_32x4d.tv2_in1k"``, ``"resnext50_32x4d"`` (the default tag)
    and ``"hf://timm/resnext50_32x4d.tv2_in1k"`` are timm names; an existing
    path is not.
    """
    if not isinstance(preset, str) or os.path.exists(preset):
        return None
    if preset.startswith("hf://"):
        entry = pretrained.find_hub_entry(preset[len("hf://"):])
        return (entry.arch, entry.tag) if entry else None
    arch, _, tag = preset.partition(".")
    if arch not in families.registry():
        return None
    return arch, tag or "imagenet"


def from_timm(name, *, load_weights=True, registry=None):
    """A ``ResNeXtImageClassifier`` of a timm name, through this package's converter.

    Args:
        name: ``"<arch>.<tag>"``, ``"<arch>"`` (its default tag) or
            ``"hf://timm/<arch>.<tag>"``.
        load_weights: download and convert the weights (else random).
        registry: as in ``keras_resnext.build_classifier``.

    Raises:
        ValueError: a name this package does not know.
        FileNotFoundError: the weights must be downloaded and the hub is
            unreachable (see ``keras_resnext.hub``).
    """
    parsed = timm_name(name)
    if parsed is None:
        raise ValueError(
            "Expected a timm name of a model of keras_resnext, e.g. "
            f"'resnext50_32x4d.tv2_in1k'. Received: {name!r}. Known architectures: "
            f"{', '.join(sorted(families.registry()))}")
    arch, tag = parsed
    if load_weights:
        return from_weights(arch, tag, registry=registry)
    entry = pretrained.get_pretrained(arch, tag, registry=registry)
    model = model_lib.build(arch, classes=entry.num_classes)
    return from_keras_model(model, entry.eval_transform())
