"""A model's size from its spec, before anything is built.

Each family tallies its layers (``family.estimate(spec, x)``) with a ``Tally``:
parameters, BatchNorm statistics, weighted layers and the output elements of
every convolution, from channel counts and strides alone. The parameter counts
are exact (``tests/test_spec_estimate.py`` checks every registered model); the
activations are a lower bound of what a forward pass holds (convolution outputs
only: BatchNorm and activation outputs come on top). The blocks after the first
of a stage are identical, so a stage is tallied once per block kind and
multiplied: the estimate of ``depths=(10000, 1)`` takes microseconds, while
building it takes many minutes (26 to 190 ms a block on the project's 2-core
CPU, idle to busy).

``check`` refuses, with one line naming the estimate, a spec whose weighted
layer count is above ``MAX_LAYERS`` or whose estimated memory is above the
machine's RAM; ``keras_resnext.build`` calls it before any layer exists.
"""

import dataclasses
import os

# Weighted layers (convolutions and dense layers) of the deepest spec accepted.
# The deepest registered model, resnest269e, has 453 of them; the deepest ResNets
# published, ResNet-1001 and ResNet-1202 for CIFAR (He et al. 2016), about 1,000
# and 1,200. 3,000 admits them all with room; beyond it, building alone takes
# minutes and such a depth is almost always a typo (depths=(10000, 1) has 30,007).
MAX_LAYERS = 3000
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Shape:
    """A feature map of one image: channels, height and width."""

    channels: int
    height: int
    width: int

    def strided(self, stride, channels=None):
        """The map after a layer of stride ``stride`` (PyTorch padding: ceil(size / stride))."""
        return Shape(self.channels if channels is None else channels,
                     -(-self.height // stride), -(-self.width // stride))


class Tally:
    """Sizes of a network counted layer by layer, as a family builds it.

    Attributes:
        params: trainable parameters (kernels, biases, BatchNorm scales and offsets).
        buffers: non-trainable weights (BatchNorm moving means and variances).
        layers: weighted layers (convolutions and dense layers).
        activations: output elements of the weighted layers for one image.
    """

    def __init__(self):
        self.params = self.buffers = self.layers = self.activations = 0

    def conv(self, x, *, filters, kernel_size=1, stride=1, groups=1, use_bias=False):
        """A ``Conv2D``/``GroupConv2D``; returns its output ``Shape``."""
        self.params += kernel_size * kernel_size * (x.channels // groups) * filters
        self.params += filters if use_bias else 0
        return self._output(x.strided(stride, filters))

    def depthwise(self, x, *, kernel_size, stride=1):
        """A ``DepthwiseConv2D`` (multiplier 1, no bias)."""
        self.params += kernel_size * kernel_size * x.channels
        return self._output(x.strided(stride))

    def dense(self, features, units):
        """A ``Dense`` layer with bias on ``features`` inputs."""
        self.params += features * units + units
        return self._output(Shape(units, 1, 1))

    def batch_norm(self, x):
        """A ``BatchNorm``: scale and offset, moving mean and variance."""
        self.params += 2 * x.channels
        self.buffers += 2 * x.channels
        return x

    def conv_bn(self, x, **conv_args):
        """``common.conv_bn``: a convolution and its BatchNorm."""
        return self.batch_norm(self.conv(x, **conv_args))

    def repeat(self, block, x, times, **block_args):
        """``times`` identical ``block(tally, x, **block_args)``, each on an input
        of ``x``'s shape: tallied once, then multiplied. Returns one's output."""
        if times < 1:
            return x
        once = Tally()
        out = block(once, x, **block_args)
        for name in ("params", "buffers", "layers", "activations"):
            setattr(self, name, getattr(self, name) + times * getattr(once, name))
        return out

    def stage(self, block, x, *, depth, stride, **block_args):
        """A stage: the first block (``stride``), then ``depth - 1`` identical ones."""
        x = block(self, x, stride=stride, **block_args)
        return self.repeat(block, x, depth - 1, stride=1, **block_args)

    def _output(self, out):
        self.layers += 1
        self.activations += out.channels * out.height * out.width
        return out


@dataclasses.dataclass(frozen=True)
class Size:
    """The estimate of a model (see ``estimate``).

    Attributes:
        params: trainable parameters (exact).
        buffers: non-trainable weights (BatchNorm statistics; exact).
        layers: weighted layers (convolutions and dense layers; exact).
        activations: output elements of the weighted layers for one image
            at the input size (a lower bound of a forward pass's memory).
        complete: False when counting stopped early (a schedule so long that
            it is refused on its length alone): ``layers`` is then a lower
            bound and the other fields are not filled in.
    """

    params: int
    buffers: int
    layers: int
    activations: int
    complete: bool = True

    def weight_bytes(self, itemsize=4):
        """Bytes of all the weights (trainable and not)."""
        return (self.params + self.buffers) * itemsize

    def memory_bytes(self, *, batch=1, training=False, itemsize=4, activation_itemsize=4):
        """A lower bound of the memory of one step at ``batch`` images.

        Inference holds the weights and the activations; training also holds
        the gradients and up to two optimizer slots per weight (AdamW; SGD
        with momentum has one), and keeps the activations for the backward pass.
        """
        weights = self.weight_bytes(itemsize)
        if training:
            weights += 3 * self.params * itemsize
        return weights + self.activations * batch * activation_itemsize


def estimate(spec, *, input_shape=None, classes=1000, include_top=True):
    """The size of ``keras_resnext.build(spec, ...)``, without building it.

    Args:
        spec: a family spec (``keras_resnext.get_spec(name)`` for a name).
        input_shape: ``(H, W, C)`` (channels first under that image data
            format); ``None`` or ``None`` dimensions: the spec's default size
            and 3 channels.
        classes: width of the classifier.
        include_top: count the classifier.

    Returns:
        A ``Size``.
    """
    from keras_resnext import families

    family = families.family_of(spec)
    tally = Tally()
    features = family.estimate(spec, _input(spec, input_shape), tally)
    if features is None:
        return Size(0, 0, tally.layers, 0, complete=False)
    if include_top:
        tally.dense(features.channels, classes)
    return Size(tally.params, tally.buffers, tally.layers, tally.activations)


def _input(spec, input_shape):
    import keras

    dims = tuple(input_shape) if input_shape is not None else (None, None, None)
    if keras.config.image_data_format() == "channels_first":
        dims = dims[1:] + dims[:1]
    height, width, channels = (d if isinstance(d, int) else None for d in dims)
    return Shape(channels or 3, height or spec.default_size, width or spec.default_size)


def total_memory():
    """Physical memory of this machine in bytes, or None if unknown."""
    try:
        import psutil

        return psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check(spec, *, input_shape=None, classes=1000, include_top=True, batch=1,
          training=False, memory=None):
    """Raises ``ValueError`` if ``spec`` is too deep or too large for this machine.

    Args:
        spec: a family spec.
        input_shape: as ``estimate``.
        classes: as ``estimate``.
        include_top: as ``estimate``.
        batch: images per step on this machine.
        training: count gradients and optimizer slots too.
        memory: bytes available (default: ``total_memory()``).

    Returns:
        The ``Size``.

    Raises:
        ValueError: more than ``MAX_LAYERS`` weighted layers, or an estimated
            memory above ``memory``; one line naming the estimate.
    """
    import keras

    size = estimate(spec, input_shape=input_shape, classes=classes,
                    include_top=include_top)
    if size.layers > MAX_LAYERS:
        counted = (f"{size.layers:,} weighted layers" if size.complete
                   else f"at least {size.layers:,} weighted layers")
        details = f", {size.params:,} parameters" if size.complete else ""
        raise ValueError(
            f"Refusing to build a model of {counted}{details} (estimated from the spec; "
            f"the limit is {MAX_LAYERS:,}, keras_resnext.families.size.MAX_LAYERS, far "
            f"above the deepest published ResNets). Received: spec={spec!r}")
    memory = total_memory() if memory is None else memory
    policy = keras.mixed_precision.global_policy()
    needed = size.memory_bytes(batch=batch, training=training,
                               itemsize=_itemsize(policy.variable_dtype),
                               activation_itemsize=_itemsize(policy.compute_dtype))
    if memory is not None and needed > memory:
        image = _input(spec, input_shape)
        what = "training" if training else "a forward pass"
        raise ValueError(
            f"Refusing to build a model that needs at least {needed / GIB:,.1f} GiB for "
            f"{what} at batch {batch} ({size.params:,} parameters, {size.layers:,} "
            f"weighted layers, {size.activations * batch:,} activation values at "
            f"{image.height}x{image.width}, estimated from the spec); this machine has "
            f"{memory / GIB:,.1f} GiB. Received: spec={spec!r}")
    return size


def _itemsize(dtype):
    return {"float16": 2, "bfloat16": 2, "float64": 8}.get(str(dtype), 4)
