"""Input pipelines: digits, folders (with corrupt files), tfds mock data, transforms."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_resnext import preprocessing
from keras_resnext.training import data
from keras_resnext.training import recipes

DIGITS = recipes.get_recipe("digits_quick")


def _context(pipelines, index, replicas):
    return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                      input_pipeline_id=index,
                                      num_replicas_in_sync=replicas)


def test_digits_fixed_stratified_split():
    (x_train, y_train), (x_val, y_val) = data.load_digits()
    assert x_train.shape == (1437, 32, 32, 3) and x_val.shape == (360, 32, 32, 3)
    assert x_train.dtype == np.uint8 and x_train.max() == 255 and x_train.min() == 0
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])  # gray as RGB
    assert sorted(np.bincount(y_val)) == [35, 35, 36, 36, 36, 36, 36, 36, 37, 37]
    (_, y_train2), (x_val2, y_val2) = data.load_digits()
    np.testing.assert_array_equal(y_val, y_val2)
    np.testing.assert_array_equal(x_val, x_val2)
    assert len(y_train2) == 1437


def test_random_resized_crop_full_window_is_a_resize():
    image = tf.cast(tf.random.stateless_uniform((40, 40, 3), (1, 2), 0, 255), tf.uint8)
    out = data.random_resized_crop(image, 24, tf.constant([3, 4]), scale=(1.0, 1.0),
                                   ratio=(1.0, 1.0))
    expected = tf.image.resize(tf.cast(image, tf.float32), (24, 24))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-3)
    crops = [data.random_resized_crop(image, 16, tf.constant([0, i])) for i in range(4)]
    assert all(c.shape == (16, 16, 3) for c in crops)
    assert len({float(tf.reduce_sum(c)) for c in crops}) > 1  # different crops


def test_jpeg_crop_decodes_only_the_window_with_the_same_result():
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    jpeg = tf.io.encode_jpeg(pixels, quality=95)
    png = tf.io.encode_png(pixels)
    for i in range(3):
        seed = tf.constant([11, i])
        decoded = data.random_resized_crop(tf.io.decode_jpeg(jpeg, channels=3), 24, seed)
        cropped = data.random_resized_crop_encoded(jpeg, 24, seed)
        np.testing.assert_allclose(cropped.numpy(), decoded.numpy(), atol=1.0)
        from_png = data.random_resized_crop_encoded(png, 24, seed)
        expected = data.random_resized_crop(tf.constant(pixels), 24, seed)
        np.testing.assert_array_equal(from_png.numpy(), expected.numpy())


def test_pad_random_crop_is_a_shift_of_the_zero_padded_image():
    image = tf.reshape(tf.range(32 * 32 * 3, dtype=tf.float32), (32, 32, 3))
    out = data.pad_random_crop(image, 32, tf.constant([5, 6])).numpy()
    padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0)))
    matches = [(i, j) for i in range(9) for j in range(9)
               if np.array_equal(padded[i:i + 32, j:j + 32], out)]
    assert len(matches) == 1


def test_imagenet_eval_transform_is_the_package_transform():
    image = tf.cast(tf.random.stateless_uniform((50, 70, 3), (7, 8), 0, 255), tf.uint8)
    transform = preprocessing.EvalTransform(32, crop_pct=0.875)
    out = data.eval_transform("imagenet", image, transform)
    ref = preprocessing.eval_transform(image, size=32, crop_pct=0.875)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert data.eval_transform("cifar", image[:32, :32], transform).shape == (32, 32, 3)


def test_digits_train_pipeline_resumes_at_the_same_batch():
    source = data.get_source("digits")
    full = data.train_dataset(source, DIGITS.replace(batch_size=8), epoch=1)
    batches = [b for b in full.take(4)]
    resumed = data.train_dataset(source, DIGITS.replace(batch_size=8), epoch=1,
                                 skip_batches=2)
    first = next(iter(resumed))
    np.testing.assert_array_equal(first[0].numpy(), batches[2][0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), batches[2][1].numpy())
    assert batches[0][0].shape == (8, 32, 32, 3) and batches[0][1].shape == (8, 10)
    # Normalised by preprocess_input: background 0 -> -mean/std.
    np.testing.assert_allclose(batches[0][0].numpy().min(),
                               min(-m / s for m, s in zip(preprocessing.IMAGENET_MEAN,
                                                          preprocessing.IMAGENET_STD)),
                               atol=1e-5)
    other_epoch = next(iter(data.train_dataset(source, DIGITS.replace(batch_size=8),
                                               epoch=2)))
    assert not np.array_equal(other_epoch[1].numpy(), batches[0][1].numpy())


def test_eval_pipeline_shards_cover_every_example_once():
    source = data.get_source("digits")
    steps = data.eval_steps(source, 16, num_replicas=2, num_pipelines=2)
    total, labels = 0.0, []
    for index in range(2):
        ds = data.eval_dataset(source, batch_size=16, steps=steps,
                               transform=preprocessing.EvalTransform(32),
                               input_context=_context(2, index, 2))
        for _, y, w in ds:
            total += float(tf.reduce_sum(w))
            labels.append(np.argmax(y.numpy()[w.numpy() > 0], axis=-1))
    assert total == 360
    (_, _), (_, y_val) = data.load_digits()
    assert sorted(np.concatenate(labels)) == sorted(y_val)


def _png(path, value, size=(20, 24)):
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)


@pytest.fixture
def image_tree(tmp_path):
    for split in ("train", "val"):
        for cls, value in (("cat", 50), ("dog", 200)):
            os.makedirs(tmp_path / split / cls)
            for i in range(4 if split == "train" else 2):
                _png(tmp_path / split / cls / f"{i}.png", value + i)
    (tmp_path / "val" / "cat" / "0b_corrupt.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "train" / "dog" / "9_corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    return tmp_path


def test_folder_dataset_skips_and_counts_corrupt_images(image_tree):
    source = data.get_source(f"folder:{image_tree}")
    assert source.class_names == ("cat", "dog")
    assert (source.train_size, source.val_size) == (9, 5)  # corrupt files listed
    counter = data.CorruptCounter()
    ds = data.eval_dataset(source, batch_size=2, transform=preprocessing.EvalTransform(16),
                           steps=3, counter=counter)
    weights, labels = [], []
    for _, y, w in ds:
        weights += list(w.numpy())
        labels += list(np.argmax(y.numpy(), -1))
    assert sum(weights) == 4  # 5 files, one corrupt
    assert [lab for lab, w in zip(labels, weights) if w] == [0, 0, 1, 1]
    assert int(counter.skipped.numpy()) == 1

    train_counter = data.CorruptCounter()
    recipe = DIGITS.replace(batch_size=4, image_size=16, augment="imagenet")
    batches = list(data.train_dataset(source, recipe, counter=train_counter).take(5))
    assert all(b[0].shape == (4, 16, 16, 3) for b in batches)
    # 20 images > 2 passes of 8 good: the corrupt file is dropped twice, counted once.
    assert int(train_counter.skipped.numpy()) == 1
    assert train_counter.files() == [str(image_tree / "train" / "dog" / "9_corrupt.jpg")]
    assert counter.files() == [str(image_tree / "val" / "cat" / "0b_corrupt.png")]


def test_flat_folder_tree_is_split_every_tenth_file(tmp_path):
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i in range(10):
            _png(tmp_path / cls / f"{i:02d}.png", i)
    source = data.get_source(f"folder:{tmp_path}")
    assert (source.train_size, source.val_size, source.kind) == (18, 2, "imagenet")


def test_tfds_mock_cifar10_and_imagenet2012():
    with tfds.testing.mock_data(num_examples=12):
        cifar = data.get_source("cifar10")
        assert (cifar.kind, cifar.num_classes, cifar.train_size) == ("cifar", 10, 12)
        recipe = recipes.get_recipe("cifar_paper").replace(batch_size=4)
        images, labels = next(iter(data.train_dataset(
            cifar, recipe, input_context=_context(1, 0, 2))))
        assert images.shape == (2, 32, 32, 3) and labels.shape == (2, 10)
        imagenet = data.get_source("imagenet2012")
        assert (imagenet.kind, imagenet.num_classes) == ("imagenet", 1000)
        recipe = recipes.get_recipe("imagenet_paper").replace(batch_size=3, image_size=40)
        images, labels = next(iter(data.train_dataset(imagenet, recipe)))
        assert images.shape == (3, 40, 40, 3) and labels.shape == (3, 1000)
        np.testing.assert_allclose(labels.numpy().sum(-1), 1.0)


def _batch(n=8):
    """0-255 images and one-hot labels of n distinct classes (n <= 10: a row's
    nonzero entries name the examples it was mixed from)."""
    images = tf.random.stateless_uniform((n, 32, 32, 3), (1, 1), 0, 255)
    return images, tf.one_hot(tf.range(n) % 10, 10)


def _normalise(x):
    """(x / 255 - mean) / std, written out here rather than taken from the package."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return (np.asarray(x, np.float32) / 255.0 - mean) / std


def _augment(seed=0, n=8, **recipe_changes):
    """The batch augmentation of ``_batch(n)``; every draw comes from ``seed``."""
    images, labels = _batch(n)
    recipe = DIGITS.replace(batch_size=n, seed=seed, **recipe_changes)
    out_images, out_labels = data.batch_augmentation(recipe)(images, labels)
    assert out_images.shape == images.shape and out_images.dtype == tf.float32
    assert out_labels.shape == labels.shape and out_labels.dtype == tf.float32
    return images.numpy(), out_images.numpy(), out_labels.numpy()


def _partners(labels):
    """Checks every row is a convex combination of its own one-hot label and at
    most one other example's (a permutation's partner); returns the partners."""
    assert (labels >= 0).all()
    np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-5)
    assert (labels[:, 8:] == 0).all()  # only the batch's own classes
    partners = []
    for i, row in enumerate(labels):
        others = [j for j in np.flatnonzero(row) if j != i]
        assert len(others) <= 1, (i, row)
        partners.append(others[0] if others else None)
    found = [j for j in partners if j is not None]
    assert len(found) == len(set(found))  # one permutation for the whole batch
    return partners


def test_no_augmentation_is_exactly_the_normalised_batch():
    images, out_images, out_labels = _augment()
    np.testing.assert_allclose(out_images, _normalise(images), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out_labels, np.eye(10, dtype=np.float32)[:8])


def test_mixup_blends_images_with_the_label_weights():
    images, out_images, out_labels = _augment(mixup_alpha=0.2)
    partners = _partners(out_labels)
    assert (out_labels.max(-1) < 0.99).sum() >= 2  # really mixed (fixed seed)
    for i, j in enumerate(partners):
        mixed = images[i] if j is None else (
            out_labels[i, i] * images[i] + out_labels[i, j] * images[j])
        np.testing.assert_allclose(out_images[i], _normalise(mixed), atol=1e-4,
                                   err_msg=f"example {i}, partner {j}")


def test_cutmix_pastes_a_rectangle_of_the_label_weight():
    images, out_images, out_labels = _augment(cutmix_alpha=1.0)
    partners = _partners(out_labels)
    boxes = 0
    for i, j in enumerate(partners):
        own = np.isclose(out_images[i], _normalise(images[i]), atol=1e-5).all(-1)
        if j is None:
            assert own.all(), i
            continue
        other = np.isclose(out_images[i], _normalise(images[j]), atol=1e-5).all(-1)
        assert (own | other).all(), i  # every pixel from one of the two images
        pasted = ~own
        rows, cols = np.nonzero(pasted)
        height, width = ((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
                         if len(rows) else (0, 0))
        assert pasted.sum() == height * width, i  # a rectangle
        # The label weight is the area of Keras' box; the pasted pixels (those
        # whose corner lies in it) differ from it by less than a row + a column.
        assert abs(pasted.mean() - out_labels[i, j]) < (height + width + 1) / 32**2, i
        boxes += height > 0
    assert boxes >= 4


def test_random_erasing_fills_a_rectangle_with_the_mean():
    """torchvision's RandomErasing(value=0) after normalisation: 0 is the mean."""
    images, out_images, out_labels = _augment(random_erasing=1.0)
    np.testing.assert_array_equal(out_labels, np.eye(10, dtype=np.float32)[:8])
    for i in range(8):
        erased = (np.abs(out_images[i]) < 1e-5).all(-1)
        own = np.isclose(out_images[i], _normalise(images[i]), atol=1e-5).all(-1)
        assert (erased | own).all() and erased.any(), i
        rows, cols = np.nonzero(erased)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() == height * width, i  # a rectangle
        # Area within torchvision's scale (0.02, 0.33), to a row + a column.
        slack = (height + width + 1) / 32**2
        assert 0.02 - slack < erased.mean() < 0.33 + slack, i


def test_random_erasing_probability_is_the_recipes():
    """A (p, p) factor: Keras' scalar p would erase with probability p / 2."""
    _, out_images, _ = _augment(n=400, random_erasing=0.25)
    erased = (np.abs(out_images) < 1e-5).all(-1).any((1, 2))
    assert 100 - 3 * 8.7 < erased.sum() < 100 + 3 * 8.7  # binomial(400, 0.25)


def test_augmentation_is_reproducible_from_its_seed():
    changes = dict(randaugment=9, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=1.0)
    _, first, first_labels = _augment(3, **changes)
    _, again, again_labels = _augment(3, **changes)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    _, other, _ = _augment(4, **changes)
    assert not np.allclose(first, other)


def test_randaugment_changes_images_not_labels():
    images, out_images, out_labels = _augment(randaugment=9)
    np.testing.assert_array_equal(out_labels, np.eye(10, dtype=np.float32)[:8])
    changed = [not np.allclose(a, b, atol=1e-3)
               for a, b in zip(out_images, _normalise(images))]
    assert sum(changed) >= 6, changed
    # Still 0-255 pixels before normalisation.
    raw = (out_images * np.array([0.229, 0.224, 0.225]) +
           np.array([0.485, 0.456, 0.406])) * 255
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3


def test_mixup_cutmix_randaugment_batches():
    images, out_images, out_labels = _augment(mixup_alpha=0.2, cutmix_alpha=1.0,
                                              randaugment=9)
    partners = _partners(out_labels)
    assert sum(j is not None for j in partners) >= 4
    assert (out_labels.max(-1) < 0.99).sum() >= 2
    assert np.isfinite(out_images).all()
    assert not np.allclose(out_images, _normalise(images), atol=1e-3)


def test_augmented_grid_undoes_normalisation():
    raw = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    grid = data.augmented_grid(preprocessing.preprocess_input(raw))
    assert grid.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(grid.numpy()[0, 8:16, :8], raw[4] / 255.0, atol=1e-5)


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset.*'no_such_dataset'"):
        data.get_source("no_such_dataset")
    with pytest.raises(FileNotFoundError, match="downloads/manual"):
        data.get_source("imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        data.get_source("cifar10", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.get_source(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="folder:"):
        data.get_source("folder:")


def test_augmentation_needs_no_keras_cv():
    """keras-cv is no dependency: the augmentations are Keras core layers."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        sys.modules["keras_cv"] = None  # any import of it fails
        import tensorflow as tf
        from keras_resnext.training import data, recipes
        recipe = recipes.get_recipe("imagenet_modern").replace(batch_size=4)
        images = tf.random.stateless_uniform((4, 32, 32, 3), (1, 1), 0, 255)
        out, labels = data.batch_augmentation(recipe)(images, tf.one_hot(tf.range(4), 4))
        print(out.shape, labels.shape)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(4,", "32,", "32,", "3)", "(4,", "4)"]
