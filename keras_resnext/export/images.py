"""Calibration and validation images of an export: folders and tfds splits.

Images are decoded and eval-transformed (resize, center crop) to float32 0-255
``(N, S, S, 3)`` arrays, as every artifact expects them. Errors name the role
the folder plays (calibration or validation).
"""

import dataclasses
import os

import numpy as np

from keras_resnext.export.config import IMAGE_EXTENSIONS

ROLES = ("calibration", "validation")


def list_images(directory, *, role="calibration"):
    """Sorted image files of a folder (not recursive), checked to be readable.

    Args:
        directory: the folder.
        role: what the images are for (``ROLES``), named in the errors.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: not a directory, unreadable, or holds no image file.
    """
    directory = os.fspath(directory)
    what = role.capitalize()
    if not os.path.exists(directory):
        raise FileNotFoundError(f"{what} folder not found: {directory!r}")
    if not os.path.isdir(directory):
        raise ValueError(f"{what} path is not a folder: {directory!r}")
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise ValueError(f"{what} folder is unreadable: {directory!r} ({e})") from e
    files = [os.path.join(directory, n) for n in names
             if n.lower().endswith(IMAGE_EXTENSIONS)
             and os.path.isfile(os.path.join(directory, n))]
    if not files:
        raise ValueError(
            f"{what} folder {directory!r} holds no image file; accepted "
            f"extensions: {IMAGE_EXTENSIONS}")
    for path in files:
        if not os.access(path, os.R_OK):
            raise ValueError(f"{what} image is unreadable: {path!r}")
    return files


def load_images(directory, transform, *, limit=None, role="calibration"):
    """Decodes and eval-transforms the images of a folder.

    Args:
        directory: folder of JPEG/PNG/BMP/GIF files.
        transform: the ``EvalTransform`` (size, crop, interpolation).
        limit: keep the first ``limit`` files (sorted by name).
        role: what the images are for (``ROLES``), named in the errors.

    Returns:
        ``(N, size, size, 3)`` float32 array of 0-255 pixels.

    Raises:
        FileNotFoundError, ValueError: see ``list_images``; ``ValueError``
            names a file that cannot be decoded.
    """
    import tensorflow as tf

    files = list_images(directory, role=role)[:limit]
    images = []
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        except (OSError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f"Cannot decode {role} image {path!r}: {e}") from None
        images.append(_resize_crop(image, transform))
    return np.stack(images)


def load_tfds_images(name, split, transform, *, limit=100, data_dir=None):
    """Eval-transformed images from a tensorflow-datasets split.

    Args:
        name: dataset name (e.g. ``"imagenet2012"``, ``"imagenette"``).
        split: split, e.g. ``"validation[:200]"``.
        transform: the ``EvalTransform``.
        limit: number of images.
        data_dir: tfds data directory.

    Returns:
        ``(N, size, size, 3)`` float32 array of 0-255 pixels.
    """
    import tensorflow_datasets as tfds

    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    images = [_resize_crop(ex["image"], transform) for ex in ds.take(limit)]
    if not images:
        raise ValueError(f"tfds split {name}:{split} yielded no image")
    return np.stack(images)


def _resize_crop(image, transform):
    if image.shape[-1] == 1:
        import tensorflow as tf
        image = tf.image.grayscale_to_rgb(image)
    return transform.resize_crop(image).numpy()


def parse_tfds_source(source):
    """``"name:split"`` -> ``(name, split)``.

    Raises:
        ValueError: no ``:`` or an empty part.
    """
    name, sep, split = str(source).partition(":")
    if not sep or not name or not split:
        raise ValueError(
            "A tfds source must be 'name:split', e.g. 'imagenet2012:validation[:500]'. "
            f"Received: {source!r}")
    return name, split


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where the images of one role come from: a folder, a tfds split, or nothing.

    Checked when made (the folder is listed, the tfds source parsed), so a
    bad source fails before any model is built or image decoded.

    Attributes:
        role: ``"calibration"`` or ``"validation"``.
        directory: folder of images, or None.
        tfds: ``"name:split"``, or None.
        limit: number of images used.
        tfds_data_dir: tfds data directory.
    """

    role: str
    directory: object = None
    tfds: str = None
    limit: int = 100
    tfds_data_dir: str = None

    def __post_init__(self):
        if self.directory is not None and self.tfds is not None:
            raise ValueError(f"Give one {self.role} source, a folder or a tfds split. "
                             f"Received: {self.directory!r} and {self.tfds!r}")
        if self.directory is not None:
            list_images(self.directory, role=self.role)
        if self.tfds is not None:
            parse_tfds_source(self.tfds)

    @property
    def given(self):
        return self.directory is not None or self.tfds is not None

    def load(self, transform, limit=None):
        """``(images, description)``; ``(None, None)`` for no source.

        Args:
            transform: the ``EvalTransform``.
            limit: images to read instead of ``self.limit``.
        """
        limit = self.limit if limit is None else limit
        if self.directory is not None:
            return (load_images(self.directory, transform, limit=limit, role=self.role),
                    f"folder {self.directory}")
        if self.tfds is not None:
            name, split = parse_tfds_source(self.tfds)
            return (load_tfds_images(name, split, transform, limit=limit,
                                     data_dir=self.tfds_data_dir),
                    f"tfds {self.tfds}")
        return None, None


def load_sources(calibration, validation, transform):
    """Calibration and validation images of an export, and where they came from.

    Without a validation source, the calibration images after the first
    ``calibration.limit`` are held out for validation (or, if there are none,
    the calibration images themselves are used, and the description says so).

    Args:
        calibration, validation: ``ImageSource`` of each role.
        transform: the ``EvalTransform``.

    Returns:
        ``(calibration_images, validation_images, sources)``: arrays or None,
        and a dict of descriptions for the report.
    """
    sources = {}
    held_out = not validation.given
    n = calibration.limit
    images, sources["calibration"] = calibration.load(
        transform, n + validation.limit if held_out else n)
    checked, sources["validation"] = validation.load(transform)
    if held_out and images is not None:
        if len(images) > n:
            checked, images = images[n:], images[:n]
            sources["validation"] = (f"{sources['calibration']}, images after the first "
                                     f"{n} (held out)")
        else:
            checked = images
            sources["validation"] = (f"{sources['calibration']} (the calibration images: "
                                     "NOT held out)")
    return images, checked, {k: v for k, v in sources.items() if v is not None}
