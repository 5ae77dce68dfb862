"""Input pipelines: tensorflow-datasets, image folders, and the embedded digits.

Transforms follow the paper (Xie et al., CVPR 2017): section 4 for ImageNet
(random-resized-crop with scale 0.08-1 and ratio 3/4-4/3, plus flip, for
training; resize the short side and center-crop for evaluation, the
``keras_resnext.preprocessing.eval_transform`` of the weights) and appendix A for
CIFAR (zero-pad 4, random 32x32 crop, flip). Pixels are normalised with
``keras_resnext.preprocessing.preprocess_input`` after augmentation.

Every pipeline is ``tf.data`` with parallel map and prefetch, built per input
pipeline (per worker) from a ``tf.distribute.InputContext`` and sharded there.
Images that fail to decode are dropped; ``CorruptCounter`` counts the distinct
files dropped and keeps their names (``describe_skipped`` names the first few).
"""

import dataclasses
import logging
import os

import numpy as np

from keras_resnext import preprocessing

EMBEDDED_DATASETS = ("digits",)
FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = preprocessing.IMAGE_EXTENSIONS
VALIDATION_SPLITS = ("validation", "val", "test")
# Skipped files named in a message or a result (the count covers all of them).
NAMED_SKIPPED = 10
# The digits' fixed split: 20% validation, stratified, seed 0 (360 of 1797 images).
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_SIZE = 32
# Every FOLDER_VAL_EVERY-th file (sorted by path) of a flat class tree is validation.
FOLDER_VAL_EVERY = 10
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
CIFAR_PAD = 4

log = logging.getLogger("keras_resnext.training")

IMAGENET_PREPARE_HELP = (
    "imagenet2012 cannot be downloaded by tensorflow-datasets: put "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org) in "
    "{data_dir}/downloads/manual/, then run once "
    "`tfds build imagenet2012 --data_dir {data_dir}` "
    "(or `python -c \"import tensorflow_datasets as tfds; "
    "tfds.builder('imagenet2012', data_dir='{data_dir}').download_and_prepare()\"`).")
GENERIC_PREPARE_HELP = (
    "Prepare it once on a machine with network access: "
    "`tfds build {name} --data_dir {data_dir}` and copy {data_dir}/{name} here.")


@dataclasses.dataclass
class Source:
    """A dataset: where its examples come from and what they are.

    Attributes:
        name: the dataset argument (``digits``, a tfds name, ``folder:PATH``).
        kind: transform family: ``imagenet``, ``cifar`` or ``digits``.
        num_classes: number of labels.
        train_size: training examples.
        val_size: validation examples.
        class_names: label names, if known.
        read: ``read(split, input_context, seed) -> tf.data.Dataset`` of
            ``(image, label, key)``, ``image`` encoded bytes when ``encoded`` is
            true (decoded by the pipeline, which drops corrupt ones), else uint8
            HxWx3; ``key`` a string naming the example (its file path, its
            tfds id), by which corrupt files are counted once.
        encoded: see ``read``.
        splits: ``{"train": split name, "validation": split name}``.
    """

    name: str
    kind: str
    num_classes: int
    train_size: int
    val_size: int
    read: object
    encoded: bool
    class_names: tuple = ()
    splits: dict = dataclasses.field(default_factory=dict)


def validate_dataset_name(name):
    """Cheap check of the dataset argument's form (existence is checked by ``get_source``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            "`dataset` must be 'digits', 'folder:PATH' or a tensorflow-datasets name. "
            f"Received: dataset={name!r}")
    if name.startswith(FOLDER_PREFIX) and not name[len(FOLDER_PREFIX):]:
        raise ValueError(f"`folder:` needs a path, e.g. folder:/data/flowers. Received: {name!r}")


def get_source(name, data_dir=None):
    """Resolves a dataset argument to a ``Source`` without reading images.

    Args:
        name: ``"digits"`` (embedded, no download), ``"folder:PATH"`` (one
            subfolder per class, or ``train/`` and ``val/`` trees of them), or a
            tensorflow-datasets image classification dataset (``imagenet2012``,
            ``imagenette``, ``cifar10``, ``cifar100``, ...).
        data_dir: tensorflow-datasets data directory.

    Returns:
        A ``Source``.

    Raises:
        ValueError: unknown dataset, or not an image classification dataset.
        FileNotFoundError: the dataset is not prepared in ``data_dir`` (the
            message says how to prepare it), or the folder does not exist.
    """
    validate_dataset_name(name)
    if name == "digits":
        return _digits_source()
    if name.startswith(FOLDER_PREFIX):
        return _folder_source(name, os.path.expanduser(name[len(FOLDER_PREFIX):]))
    return _tfds_source(name, data_dir)


# --------------------------------------------------------------------------- digits


def load_digits(size=DIGITS_SIZE):
    """The UCI handwritten digits of scikit-learn as RGB images, with a fixed split.

    The 8x8 images (0-16) are scaled to 0-255, resized bilinearly to ``size`` and
    repeated on three channels. The split is stratified, 20% validation, seed 0.

    Returns:
        ``((x_train, y_train), (x_val, y_val))``: uint8 ``(N, size, size, 3)``
        images and int64 labels; 1437 training and 360 validation images.
    """
    import tensorflow as tf
    from sklearn import datasets
    from sklearn import model_selection

    digits = datasets.load_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    images = np.repeat(np.clip(np.round(images), 0, 255).astype("uint8"), 3, axis=-1)
    labels = digits.target.astype("int64")
    x_train, x_val, y_train, y_val = model_selection.train_test_split(
        images, labels, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=labels)
    return (x_train, y_train), (x_val, y_val)


def _digits_source():
    import tensorflow as tf

    (x_train, y_train), (x_val, y_val) = load_digits()
    arrays = {"train": (x_train, y_train), "validation": (x_val, y_val)}

    def read(split, input_context=None, seed=0):
        del seed
        x, y = arrays[split]
        keys = np.array([f"digits/{split}/{i}" for i in range(len(y))])
        ds = tf.data.Dataset.from_tensor_slices((x, y, keys))
        return _shard(ds, input_context)

    return Source(name="digits", kind="digits", num_classes=10,
                  train_size=len(y_train), val_size=len(y_val), read=read,
                  encoded=False, class_names=tuple(str(i) for i in range(10)),
                  splits={"train": "train", "validation": "validation"})


# --------------------------------------------------------------------------- folders


def _list_class_tree(root):
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(os.path.join(root, cls))):
            for fname in sorted(names):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, fname))
                    labels.append(label)
    return classes, files, labels


def _folder_source(name, root):
    import tensorflow as tf

    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder not found. Received: dataset={name!r} ({root!r} is not a "
            "directory). Expected one subfolder per class, or train/ and val/ trees.")
    subdirs = set(os.listdir(root))
    val_dir = next((d for d in VALIDATION_SPLITS if d in subdirs), None)
    if "train" in subdirs and val_dir:
        classes, train_files, train_labels = _list_class_tree(os.path.join(root, "train"))
        val_classes, val_files, val_labels = _list_class_tree(os.path.join(root, val_dir))
        if val_classes != classes:
            raise ValueError(
                f"{root}/train and {root}/{val_dir} must hold the same class folders. "
                f"Received: {classes} and {val_classes}")
    else:
        classes, files, labels = _list_class_tree(root)
        is_val = [i % FOLDER_VAL_EVERY == FOLDER_VAL_EVERY - 1 for i in range(len(files))]
        train_files = [f for f, v in zip(files, is_val) if not v]
        train_labels = [label for label, v in zip(labels, is_val) if not v]
        val_files = [f for f, v in zip(files, is_val) if v]
        val_labels = [label for label, v in zip(labels, is_val) if v]
    if len(classes) < 2 or not train_files or not val_files:
        raise ValueError(
            f"{root} must hold at least two class folders with images "
            f"({', '.join(IMAGE_EXTENSIONS)}). Found classes={classes}, "
            f"{len(train_files)} training and {len(val_files)} validation images.")
    lists = {"train": (train_files, train_labels), "validation": (val_files, val_labels)}

    def read(split, input_context=None, seed=0):
        del seed
        files, labels = lists[split]
        ds = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, "int64")))
        ds = _shard(ds, input_context)
        return ds.map(lambda f, y: (tf.io.read_file(f), y, f),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return Source(name=name, kind="imagenet", num_classes=len(classes),
                  train_size=len(train_files), val_size=len(val_files), read=read,
                  encoded=True, class_names=tuple(classes),
                  splits={"train": "train", "validation": val_dir or "validation"})


# --------------------------------------------------------------------------- tfds


def _tfds_source(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset. Received: dataset={name!r}. Accepted: "
            f"{', '.join(EMBEDDED_DATASETS)} (embedded), folder:PATH, or a "
            "tensorflow-datasets image classification dataset such as imagenet2012, "
            "imagenette, cifar10, cifar100 (see tfds.list_builders()).") from None
    features = builder.info.features
    if ("image" not in features or "label" not in features or
            not isinstance(features["label"], tfds.features.ClassLabel)):
        raise ValueError(
            f"{name!r} is not an image classification dataset: it needs 'image' and "
            f"'label' (ClassLabel) features. Received features: {list(features)}")
    known_splits = dict(builder.info.splits)
    val_split = next((s for s in VALIDATION_SPLITS if s in known_splits),
                     VALIDATION_SPLITS[0] if not known_splits else None)
    if val_split is None:
        raise ValueError(
            f"{name!r} has no validation split. Received splits: {sorted(known_splits)}. "
            f"Accepted: one of {VALIDATION_SPLITS}")
    shape = features["image"].shape
    kind = "cifar" if shape[0] and shape[0] <= 64 and shape[1] and shape[1] <= 64 else "imagenet"

    def read(split, input_context=None, seed=0):
        split_name = {"train": "train", "validation": val_split}[split]
        pipelines = input_context.num_input_pipelines if input_context else 1
        num_shards = (known_splits[split_name].num_shards
                      if split_name in known_splits else 0)
        by_file = pipelines > 1 and num_shards >= pipelines
        read_config = tfds.ReadConfig(
            shuffle_seed=seed, input_context=input_context if by_file else None,
            try_autocache=False, add_tfds_id=True)
        ds = builder.as_dataset(
            split=split_name, shuffle_files=split == "train", read_config=read_config,
            decoders={"image": tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: (ex["image"], ex["label"], ex["tfds_id"]))
        return ds if by_file else _shard(ds, input_context)

    try:
        train = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    except AssertionError:
        data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
        help_text = (IMAGENET_PREPARE_HELP if name.startswith("imagenet2012") else
                     GENERIC_PREPARE_HELP).format(data_dir=data_dir, name=name)
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in data_dir={data_dir!r} "
            f"(no network download at training time). {help_text}") from None

    def size(split_name, ds):
        if split_name in known_splits:
            return known_splits[split_name].num_examples
        n = int(ds.cardinality())
        if n < 0:
            n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
        return n

    val = builder.as_dataset(split=val_split, decoders={"image": tfds.decode.SkipDecoding()})
    return Source(name=name, kind=kind, num_classes=features["label"].num_classes,
                  train_size=size("train", train), val_size=size(val_split, val),
                  read=read, encoded=True, class_names=tuple(features["label"].names),
                  splits={"train": "train", "validation": val_split})


def _shard(ds, input_context):
    if input_context and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


# --------------------------------------------------------------------------- transforms


def random_resized_crop(image, size, seed, scale=RRC_SCALE, ratio=RRC_RATIO):
    """ImageNet training crop (Szegedy et al. 2015; paper section 4), then resize.

    Args:
        image: ``(H, W, 3)`` image.
        size: output height/width.
        seed: stateless seed, shape ``(2,)``.
        scale: area fraction range of the crop.
        ratio: aspect-ratio range of the crop.

    Returns:
        ``(size, size, 3)`` float32, 0-255.
    """
    import tensorflow as tf

    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=0.0, aspect_ratio_range=ratio,
        area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")
    return tf.clip_by_value(image, 0.0, 255.0)


def random_resized_crop_encoded(encoded, size, seed, scale=RRC_SCALE, ratio=RRC_RATIO):
    """``random_resized_crop`` of an encoded image, decoding only the crop of a JPEG.

    Same crop as ``random_resized_crop(decode(encoded), ...)`` with the same
    seed; for JPEG (all of tfds' ImageNet) only the crop window is decoded, which
    is most of the input pipeline's CPU time at ImageNet resolution.
    """
    import tensorflow as tf

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed, min_object_covered=0.0, aspect_ratio_range=ratio,
            area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
        image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")
        return tf.clip_by_value(image, 0.0, 255.0)

    def other():
        return random_resized_crop(_decode(encoded), size, seed, scale=scale, ratio=ratio)

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def pad_random_crop(image, size, seed, pad=CIFAR_PAD):
    """CIFAR training crop (appendix A): zero-pad ``pad`` pixels, crop ``size``."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    if image.shape[0] != size or image.shape[1] != size:
        image = tf.image.resize(image, (size, size), method="bilinear")
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(image, (size, size, 3), seed=seed)


def train_transform(kind, image, size, seed, encoded=False):
    """The training augmentation of ``kind`` on one image (0-255 out).

    Args:
        kind: ``imagenet``, ``cifar`` or ``digits``.
        image: ``(H, W, 3)`` image, or encoded bytes if ``encoded``.
        size: output height/width.
        seed: stateless seed, shape ``(2,)``.
        encoded: ``image`` is an encoded image (raises on a corrupt one).
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    if kind == "imagenet":
        image = (random_resized_crop_encoded(image, size, seeds[0]) if encoded else
                 random_resized_crop(image, size, seeds[0]))
    else:
        image = pad_random_crop(_decode(image) if encoded else image, size, seeds[0])
    if kind == "digits":  # mirrored digits are other glyphs: no flip
        return image
    return tf.image.stateless_random_flip_left_right(image, seeds[1])


def eval_transform(kind, image, transform):
    """The evaluation transform of ``kind`` on one image (0-255 out).

    ImageNet-like data: ``transform.resize_crop`` (short side to
    ``size / crop_pct``, center crop). CIFAR/digits: the image itself, resized
    to ``transform.size`` if needed.

    Args:
        kind: ``imagenet``, ``cifar`` or ``digits``.
        image: ``(H, W, 3)`` 0-255 image.
        transform: a ``preprocessing.EvalTransform``.
    """
    import tensorflow as tf

    if kind == "imagenet":
        return transform.resize_crop(image)
    image = tf.cast(image, tf.float32)
    size = transform.size
    if image.shape[0] != size or image.shape[1] != size:
        image = tf.image.resize(image, (size, size), method=transform.interpolation)
    return image


# --------------------------------------------------------------------------- pipelines


class CorruptCounter:
    """Counts the distinct files that one pipeline dropped because they do not decode.

    Elements are numbered before decoding, and ``note`` records each number's
    key (file path, tfds id); after the undecodable ones are dropped, a
    sequential map (``count``) looks up the keys of the numbers missing
    between consecutive elements. A file dropped twice (an epoch that wraps
    around, every epoch) counts once. A file dropped at the very end of a
    pipeline has no element after it: ``flush`` counts those once a finite
    pipeline has been read to its end.
    """

    def __init__(self):
        import tensorflow as tf

        with tf.init_scope(), tf.device("/cpu:0"):
            self._keys = tf.lookup.experimental.MutableHashTable(
                tf.int64, tf.string, default_value="", name="corrupt_pending")
            self._dropped = tf.lookup.experimental.MutableHashTable(
                tf.string, tf.bool, default_value=False, name="corrupt_files")
            self._last = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                     name="corrupt_last")

    @property
    def skipped(self):
        """Distinct files dropped so far (an int64 scalar tensor)."""
        return self._dropped.size()

    def files(self):
        """Keys of the files dropped so far, sorted."""
        keys, _ = self._dropped.export()
        return sorted(key.decode("utf-8", "replace") for key in keys.numpy())

    def flush(self):
        """Counts the files still pending as dropped.

        Call it only after a finite pipeline was read to its end (every
        decodable element consumed): the files still pending are then the
        ones dropped after the last decodable one. Before that, pending files
        include elements read ahead and not yet consumed.
        """
        import tensorflow as tf

        indices, keys = self._keys.export()
        self._dropped.insert(keys, tf.ones_like(keys, tf.bool))
        self._keys.remove(indices)

    def reset_position(self, position=-1):
        self._last.assign(position)

    def note(self, index, example):
        """Map function before decoding: records the key (the example's last item)."""
        import tensorflow as tf

        update = self._keys.insert(index, example[-1])
        with tf.control_dependencies([update]):
            return tf.identity(index), tuple(tf.identity(e) for e in example)

    def count(self, index, *rest):
        """Sequential map function after dropping: records the keys of the gap."""
        import tensorflow as tf

        last = self._last.read_value()
        missing = self._keys.lookup(tf.range(last + 1, index))
        update = self._dropped.insert(missing, tf.ones_like(missing, tf.bool))
        with tf.control_dependencies([update]):
            update = self._keys.remove(tf.range(last + 1, index + 1))
        with tf.control_dependencies([update]):
            update = self._last.assign(index)
        with tf.control_dependencies([update]):
            return tuple(tf.identity(r) for r in rest)


def describe_skipped(files, limit=NAMED_SKIPPED):
    """One line naming the first ``limit`` of the skipped ``files`` and their count."""
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return (f"Skipped {len(files)} undecodable image file(s): "
            f"{', '.join(files[:limit])}{more}")


def _decode(encoded):
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _map_skipping_corrupt(ds, transform, source, counter):
    """Maps ``transform`` over ``(index, example)``; drops (and counts) undecodable images.

    Returns:
        A dataset of ``(image, label)``.
    """
    import tensorflow as tf

    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if source.encoded:
        ds = ds.ignore_errors()
    if counter is not None:
        return ds.map(counter.count)
    return ds.map(lambda index, image, label: (image, label))


def train_dataset(source, recipe, *, input_context=None, epoch=0, skip_batches=0,
                  counter=None):
    """One epoch's training pipeline for one input pipeline (worker).

    Shuffling and augmentation are seeded from ``(recipe.seed, epoch)``, so an
    epoch resumed after ``skip_batches`` batches continues the same order.
    The dataset is repeated (each worker's shard may be uneven), so the caller
    takes exactly ``steps_per_epoch`` batches.

    Args:
        source: a ``Source``.
        recipe: the ``Recipe`` (image size, batch size, augmentation).
        input_context: the ``tf.distribute.InputContext`` of this pipeline.
        epoch: 0-based epoch.
        skip_batches: per-replica batches already consumed in this epoch.
        counter: optional ``CorruptCounter``.

    Returns:
        ``tf.data.Dataset`` of ``(images, one_hot_labels)``, per-replica batches,
        images normalised with ``preprocess_input``.
    """
    import tensorflow as tf

    batch = (input_context.get_per_replica_batch_size(recipe.batch_size)
             if input_context else recipe.batch_size)
    kind = resolve_augment(recipe, source)
    epoch_seed = recipe.seed * 100_003 + epoch
    ds = source.read("train", input_context, epoch_seed)
    ds = ds.shuffle(min(source.train_size, 16_384), seed=epoch_seed,
                    reshuffle_each_iteration=True).repeat()
    ds = ds.skip(skip_batches * batch).enumerate(start=skip_batches * batch)
    if counter is not None:
        counter.reset_position(skip_batches * batch - 1)
        ds = ds.map(counter.note)

    def transform(index, example):
        image, label, _ = example
        image = train_transform(kind, image, recipe.image_size,
                                tf.stack([tf.cast(epoch_seed, tf.int64), index]),
                                encoded=source.encoded)
        return index, image, label

    ds = _map_skipping_corrupt(ds, transform, source, counter)
    ds = ds.map(lambda image, label: (image, tf.one_hot(label, source.num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(batch_augmentation(recipe, epoch_seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def resolve_augment(recipe, source):
    """The training transform family: the recipe's, or the dataset's with ``auto``."""
    return source.kind if recipe.augment == "auto" else recipe.augment


def augmentation_layers(recipe, seed):
    """The recipe's batch augmentations, in the order applied.

    Every layer takes 0-255 pixels, computes in float32 whatever the global dtype
    policy, and draws from its own seed (``seed``, ``seed + 1``, ...).

    Returns:
        ``{name: layer}`` for ``"randaugment"``, ``"erasing"``, ``"mixup"`` and
        ``"cutmix"``, those the recipe turns on.
    """
    import keras

    from keras_resnext.training import randaugment

    common = dict(dtype="float32")
    layers = {}
    if recipe.randaugment:
        # The recipe's M is in [0, 10], timm's convention (rand-m9: 9/10 of each
        # op's largest strength): torchvision's ops and strengths with 11 bins,
        # so M = 9 rotates up to 27 degrees, translates up to 0.9 x 150/331 of
        # the size, posterizes to 4 bits (randaugment.py says each).
        layers["randaugment"] = randaugment.RandAugment(
            magnitude=recipe.randaugment, num_ops=2, num_magnitude_bins=11, seed=seed,
            **common)
    if recipe.random_erasing:
        # torchvision's RandomErasing(p, scale=(0.02, 0.33), value=0) after
        # normalisation: the ImageNet mean before it. A (p, p) factor erases with
        # probability p (a scalar p would draw it in [0, p]). Keras draws width
        # and height fractions as square roots of two draws in ``scale`` (aspect
        # ratios 0.25-4; torchvision: area in ``scale``, ratio 0.3-3.3).
        layers["erasing"] = keras.layers.RandomErasing(
            factor=(recipe.random_erasing,) * 2, scale=(0.02, 0.33),
            fill_value=[255 * m for m in preprocessing.IMAGENET_MEAN],
            value_range=(0, 255), seed=seed + 1, **common)
    if recipe.mixup_alpha:
        # As keras-cv's: one Beta(alpha, alpha) weight per example.
        layers["mixup"] = keras.layers.MixUp(alpha=recipe.mixup_alpha, seed=seed + 2,
                                             **common)
    if recipe.cutmix_alpha:
        # Keras draws the Beta's alpha uniformly in ``factor`` per call: (a, a) is
        # Beta(a, a), as keras-cv's ``alpha=a``. The box lies inside the image (no
        # clipping) and the label weight is its exact area, which the pasted
        # pixels (a pixel is in if its corner is) match to within a row + column.
        layers["cutmix"] = keras.layers.CutMix(factor=(recipe.cutmix_alpha,) * 2,
                                               seed=seed + 3, **common)
    return layers


def batch_augmentation(recipe, seed=None):
    """Batch-level map: RandAugment, random erasing, MixUp/CutMix, normalisation.

    Args:
        recipe: the ``Recipe`` whose augmentations to apply.
        seed: seed of the augmentations (default: the recipe's).

    Returns:
        ``apply(images, labels)``: 0-255 images and one-hot labels in, normalised
        float32 images and mixed labels out.
    """
    import keras
    import tensorflow as tf

    seed = recipe.seed if seed is None else seed
    layers = augmentation_layers(recipe, seed)
    choose = keras.random.SeedGenerator(seed + 4)

    def mix(images, labels, name):
        out = layers[name]({"images": images, "labels": labels})
        return out["images"], tf.cast(out["labels"], tf.float32)

    def apply(images, labels):
        # Keras' colour ops need the channel count static; decoding leaves it unknown.
        images = tf.ensure_shape(tf.cast(images, tf.float32), (None, None, None, 3))
        if "randaugment" in layers:
            images = layers["randaugment"](images)  # ops chosen per image
        if "erasing" in layers:
            images = layers["erasing"](images)
        if "mixup" in layers and "cutmix" in layers:
            # One of the two per batch, as torchvision and timm do.
            images, labels = tf.cond(
                keras.random.uniform((), seed=choose) < 0.5,
                lambda: mix(images, labels, "mixup"),
                lambda: mix(images, labels, "cutmix"))
        elif "mixup" in layers or "cutmix" in layers:
            images, labels = mix(images, labels, "mixup" if "mixup" in layers else "cutmix")
        return preprocessing.preprocess_input(images, "channels_last"), labels

    return apply


def eval_steps(source, batch_size, num_replicas, num_pipelines=1, split="validation"):
    """Global steps that cover every example of ``split`` in the largest shard."""
    size = source.val_size if split == "validation" else source.train_size
    shard = -(-size // num_pipelines)
    per_replica = batch_size // num_replicas
    replicas_per_pipeline = num_replicas // num_pipelines
    batches = -(-shard // per_replica)
    return max(1, -(-batches // replicas_per_pipeline))


def eval_dataset(source, *, batch_size, transform, input_context=None, steps,
                 counter=None, split="validation"):
    """The validation pipeline of one input pipeline: exact, whatever the sharding.

    Every pipeline yields exactly ``steps * replicas_per_pipeline`` full
    batches: the shard's examples (weight 1) followed by padding (weight 0), so
    all replicas run the same number of steps and every example counts once.

    Args:
        source: a ``Source``.
        batch_size: global batch size.
        transform: the ``preprocessing.EvalTransform`` (size, crop,
            interpolation, mean and std; from the weights entry or the recipe).
        input_context: ``tf.distribute.InputContext`` of this pipeline.
        steps: global steps (``eval_steps``).
        counter: optional ``CorruptCounter``.
        split: ``"validation"`` or ``"train"``.

    Returns:
        ``tf.data.Dataset`` of ``(images, one_hot_labels, weights)``.
    """
    import tensorflow as tf

    batch = (input_context.get_per_replica_batch_size(batch_size)
             if input_context else batch_size)
    replicas_per_pipeline = (input_context.num_replicas_in_sync //
                             input_context.num_input_pipelines) if input_context else 1
    ds = source.read(split, input_context, 0).enumerate()
    if counter is not None:
        counter.reset_position()
        ds = ds.map(counter.note)

    def prepare(index, example):
        image, label, _ = example
        if source.encoded:
            image = _decode(image)
        image = eval_transform(source.kind, image, transform)
        image.set_shape([transform.size, transform.size, 3])
        return index, image, label

    ds = _map_skipping_corrupt(ds, prepare, source, counter)

    def finish(image, label, weight):
        image = transform.normalize(image)
        return image, tf.one_hot(label, source.num_classes), weight

    ds = ds.map(lambda image, label: (image, label, tf.constant(1.0)))
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros([transform.size, transform.size, 3]), tf.constant(0, tf.int64),
         tf.constant(0.0))).repeat()
    ds = ds.concatenate(padding).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True).take(steps * replicas_per_pipeline)
    return ds.prefetch(tf.data.AUTOTUNE)


def augmented_grid(images, mean=preprocessing.IMAGENET_MEAN,
                   std=preprocessing.IMAGENET_STD, max_images=16):
    """A square grid of normalised images, back in 0-1, for TensorBoard.

    Args:
        images: ``(N, H, W, 3)`` images normalised by ``preprocess_input``.
        mean: the mean used to normalise.
        std: the std used to normalise.
        max_images: at most this many images (the largest square number).

    Returns:
        ``(1, rows * H, rows * W, 3)`` float32 in [0, 1].
    """
    import tensorflow as tf

    n = int(min(images.shape[0], max_images) ** 0.5)
    images = tf.cast(images[: n * n], tf.float32) * tf.constant(std) + tf.constant(mean)
    images = tf.clip_by_value(images, 0.0, 1.0)
    h, w = images.shape[1], images.shape[2]
    grid = tf.reshape(images, (n, n, h, w, 3))
    grid = tf.transpose(grid, (0, 2, 1, 3, 4))
    return tf.reshape(grid, (1, n * h, n * w, 3))
