"""RandAugment as torchvision's ``transforms.RandAugment``, in TensorFlow ops.

Cubuk et al., "RandAugment", CVPR workshops 2020; op list and magnitudes of
torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins)``: each op's
strength is its largest strength x ``magnitude / (num_magnitude_bins - 1)``,
with a random sign for the signed ops. Largest strengths: shear 0.3 (as
``atan(0.3)``, about 16.7 degrees), translate 150/331 of the size (whole
pixels), rotate 30 degrees, brightness/colour/contrast/sharpness factors 1 +- 0.9,
posterize to 8 - round(4 m / (bins - 1)) bits, solarize above 255 (1 - m /
(bins - 1)); plus identity, autocontrast and equalize. Geometric ops fill with
0 and interpolate bilinearly (torchvision's reference recipes pass bilinear).

``keras.layers.RandAugment`` (Keras 3.15) gives every op the same factor (a
rotation of up to factor x 360 degrees, translations of up to factor x the
size) and computes all 11 ops to keep one. Here each image draws its own ops
and signs, and ``tf.switch_case`` computes only the chosen ones. Rough speed, 64
images of 176 px, ``num_ops=2``, magnitude 9, inside a ``tf.function`` (2-core
Xeon with AMX shared with other jobs, nice 19, TF 2.21, oneDNN on; best of 3):
this layer 0.18 s per batch; ``keras.layers.RandAugment`` (factor 0.9) mapped
over the images, as the pipeline called it, 1.9 s.

Images are 0-255 floats (not rounded between ops, as PIL would); posterize and
equalize round them to whole levels first. The layer runs in ``tf.data`` maps
(TensorFlow backend), as Keras' image preprocessing layers do.
"""

import math

import keras
import tensorflow as tf

OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
       "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
       "autocontrast", "equalize")
SIGNED = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate",
          "brightness", "color", "contrast", "sharpness")
# Largest strength of each op, at magnitude num_magnitude_bins - 1 (torchvision).
MAX_SHEAR = 0.3
MAX_TRANSLATE = 150.0 / 331.0  # of the image's width (x) or height (y)
MAX_ROTATE = 30.0  # degrees
MAX_ENHANCE = 0.9  # brightness, colour, contrast, sharpness: factor 1 +- this
# ITU-R 601-2 luma, as PIL's convert("L") and torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def _project(image, transform):
    """Samples ``image`` (H, W, 3) at ``transform`` of each output pixel.

    ``transform`` ``[a0, a1, a2, b0, b1, b2]`` maps output pixel (x, y) to the
    input point (a0 x + a1 y + a2, b0 x + b1 y + b2), pixel centres at integers.
    """
    size = tf.shape(image)[:2]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.concat([transform, [0.0, 0.0]], 0)[None],
        output_shape=size, fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]


def shear(image, amount, axis):
    """torchvision's shear by ``atan(amount)`` about the top-left corner."""
    # torchvision's centre [0, 0] is the corner of pixel 0, half a pixel off ours.
    if axis == "x":
        return _project(image, tf.stack([1.0, amount, 0.5 * amount, 0.0, 1.0, 0.0]))
    return _project(image, tf.stack([1.0, 0.0, 0.0, amount, 1.0, 0.5 * amount]))


def translate(image, pixels, axis):
    """Moves the content by ``pixels`` (truncated to whole pixels) along ``axis``."""
    shift = -tf.cast(tf.cast(pixels, tf.int32), tf.float32)
    if axis == "x":
        return _project(image, tf.stack([1.0, 0.0, shift, 0.0, 1.0, 0.0]))
    return _project(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, shift]))


def rotate(image, degrees):
    """Rotates counter-clockwise (as displayed) about the image centre."""
    angle = degrees * math.pi / 180.0
    height, width = [tf.cast(d - 1, tf.float32) for d in tf.unstack(tf.shape(image)[:2])]
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _project(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset]))


def _blend(image, degenerate, factor):
    """PIL's ImageEnhance: ``degenerate + factor (image - degenerate)``, clipped."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grayscale(image):
    return tf.reduce_sum(image * tf.constant(LUMA), -1, keepdims=True)


def brightness(image, factor):
    return _blend(image, tf.zeros_like(image), factor)


def color(image, factor):
    return _blend(image, _grayscale(image), factor)


def contrast(image, factor):
    return _blend(image, tf.reduce_mean(_grayscale(image)), factor)


def sharpness(image, factor):
    """Blends with PIL's SMOOTH filter (3x3, centre 5, /13); borders unchanged."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    inside = tf.pad(tf.ones_like(smooth[..., :1]), [[1, 1], [1, 1], [0, 0]])
    degenerate = inside * degenerate + (1.0 - inside) * image
    return _blend(image, degenerate, factor)


def _levels(image):
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def posterize(image, bits):
    """Keeps the top ``bits`` bits of each whole level."""
    step = tf.cast(tf.bitwise.left_shift(1, 8 - bits), tf.float32)
    return tf.floor(_levels(image) / step) * step


def solarize(image, threshold):
    return tf.where(image >= threshold, 255.0 - image, image)


def autocontrast(image):
    """Stretches each channel to 0-255 (constant channels unchanged)."""
    low = tf.reduce_min(image, [0, 1])
    high = tf.reduce_max(image, [0, 1])
    flat = high <= low
    scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, high - low))
    low = tf.where(flat, 0.0, low)
    return tf.clip_by_value((image - low) * scale, 0.0, 255.0)


def _equalize_channel(channel):
    """PIL's ImageOps.equalize of one channel of whole levels (int32, H x W)."""
    hist = tf.math.bincount(channel, minlength=256, maxlength=256)
    last = tf.gather(hist, tf.reduce_max(channel))  # count of the top level
    step = (tf.reduce_sum(hist) - last) // 255
    safe = tf.maximum(step, 1)
    lut = tf.clip_by_value((tf.cumsum(hist, exclusive=True) + safe // 2) // safe, 0, 255)
    return tf.where(step > 0, tf.gather(lut, channel), channel)


def equalize(image):
    levels = tf.cast(_levels(image), tf.int32)
    channels = [_equalize_channel(levels[..., c]) for c in range(3)]
    return tf.cast(tf.stack(channels, -1), tf.float32)


def apply_op(image, op, magnitude, num_magnitude_bins=31):
    """Applies op ``op`` (index in ``OPS``, an int32 tensor) at a signed magnitude.

    Args:
        image: float32 (H, W, 3), 0-255.
        op: scalar int32 index into ``OPS``; only that op is computed.
        magnitude: scalar float32 bin, negative for the opposite direction of a
            signed op (unsigned ops take its absolute value).
        num_magnitude_bins: torchvision's; the largest strength is at bin - 1.

    Returns:
        The transformed image, float32 0-255.
    """
    level = tf.cast(magnitude, tf.float32) / (num_magnitude_bins - 1)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    strength = tf.abs(level)
    bits = 8 - tf.cast(tf.round(4.0 * strength), tf.int32)
    branches = {
        "identity": lambda: image,
        "shear_x": lambda: shear(image, MAX_SHEAR * level, "x"),
        "shear_y": lambda: shear(image, MAX_SHEAR * level, "y"),
        "translate_x": lambda: translate(image, MAX_TRANSLATE * width * level, "x"),
        "translate_y": lambda: translate(image, MAX_TRANSLATE * height * level, "y"),
        "rotate": lambda: rotate(image, MAX_ROTATE * level),
        "brightness": lambda: brightness(image, 1.0 + MAX_ENHANCE * level),
        "color": lambda: color(image, 1.0 + MAX_ENHANCE * level),
        "contrast": lambda: contrast(image, 1.0 + MAX_ENHANCE * level),
        "sharpness": lambda: sharpness(image, 1.0 + MAX_ENHANCE * level),
        "posterize": lambda: posterize(image, bits),
        "solarize": lambda: solarize(image, 255.0 * (1.0 - strength)),
        "autocontrast": lambda: autocontrast(image),
        "equalize": lambda: equalize(image),
    }
    out = tf.switch_case(op, [branches[name] for name in OPS])
    return tf.ensure_shape(out, image.shape)


@keras.saving.register_keras_serializable(package="keras_resnext")
class RandAugment(keras.layers.Layer):
    """torchvision's RandAugment on a batch of 0-255 images, ops drawn per image.

    Args:
        magnitude: torchvision's ``magnitude``: bin in [0, num_magnitude_bins - 1].
        num_ops: ops applied in turn to each image (torchvision's default 2).
        num_magnitude_bins: torchvision's (default 31: magnitude 30 is the largest).
        seed: seed of the op and sign draws.
    """

    def __init__(self, magnitude=9, num_ops=2, num_magnitude_bins=31, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= magnitude <= num_magnitude_bins - 1:
            raise ValueError(f"RandAugment magnitude must be in [0, {num_magnitude_bins - 1}] "
                             f"(num_magnitude_bins={num_magnitude_bins}); received "
                             f"magnitude={magnitude}")
        if num_ops < 0:
            raise ValueError(f"RandAugment num_ops must be >= 0; received num_ops={num_ops}")
        self.magnitude = magnitude
        self.num_ops = num_ops
        self.num_magnitude_bins = num_magnitude_bins
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def draw(self, batch):
        """Per image and op: the op's index in ``OPS`` and its signed magnitude."""
        shape = (batch, self.num_ops)
        ops = tf.cast(keras.random.randint(shape, 0, len(OPS), seed=self.generator), tf.int32)
        flip = keras.random.randint(shape, 0, 2, seed=self.generator)
        signed = tf.reduce_any(ops[..., None] == [OPS.index(n) for n in SIGNED], -1)
        negative = tf.logical_and(signed, tf.cast(flip, tf.bool))
        magnitudes = tf.where(negative, -1.0, 1.0) * float(self.magnitude)
        return ops, magnitudes

    def call(self, images):
        images = tf.cast(images, tf.float32)
        ops, magnitudes = self.draw(tf.shape(images)[0])

        def augment(args):
            image, image_ops, image_magnitudes = args
            for i in range(self.num_ops):
                image = apply_op(image, image_ops[i], image_magnitudes[i],
                                 self.num_magnitude_bins)
            return image

        return tf.map_fn(augment, (images, ops, magnitudes),
                         fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "magnitude": self.magnitude, "num_ops": self.num_ops,
                "num_magnitude_bins": self.num_magnitude_bins, "seed": self.seed}
