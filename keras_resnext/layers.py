"""Grouped convolution that runs as plain TensorFlow ops on every runtime.

Keras 3 sends every grouped convolution under the TensorFlow backend through
``tf.function(jit_compile=True)`` (``keras/src/backend/tensorflow/nn.py::conv``).
On a CPU that is ~24x slower for a ResNeXt training step, and exporters cannot
translate the XLA-wrapped call (tf2onnx leaves a ``StatefulPartitionedCall``
that onnxruntime refuses). ``GroupConv2D`` keeps the weights and config of
``keras.layers.Conv2D(groups=C)`` and only replaces the op it calls.

Which op, measured on CPUs with and without oneDNN (docs/cpu.md), probed once
per dtype on the runtime at hand:

- **Native**: one grouped ``Conv2D`` op, wherever TensorFlow has grouped
  gradient kernels for the dtype (oneDNN on a CPU, cuDNN on a GPU). In the
  user's process it is fenced by ``EnsureShape`` only where Grappler's fused
  kernel has no groups: without oneDNN the remapper fuses ``Conv2D +
  FusedBatchNorm (+ Relu)`` and ``Conv2D + BiasAdd`` into ``_FusedConv2D``,
  which raises "Fused conv implementation does not support grouped
  convolutions for now"; oneDNN's fused kernel has groups, and the fusion is
  worth ~5% of ResNeXt-50 inference. Grappler keeps ``EnsureShape`` (it
  removes ``Identity``, a no-op ``Reshape`` and ``x * 1``); tf2onnx and the
  TFLite converter drop it.
- **Exports** (``portable_graph()``): always the native op, always fenced, so
  an artifact is the same whichever machine wrote it and runs with oneDNN on
  and off: ONNX gets one ``Conv`` with ``group=C``, TFLite one ``CONV_2D``.
  Every runtime has the grouped forward kernel.
- **Native forward, float32 gradients**: a dtype whose grouped forward runs
  on the fast kernels but whose gradient kernels are missing.
- **Blocked**: without oneDNN (TensorFlow's default on CPUs without AVX-512),
  the grouped forward kernel is slow for narrow groups (a ResNeXt-50 at 0.48x
  ResNet-50's inference speed) and its gradients do not exist. Groups are
  merged into block-diagonal super-groups at least ``BLOCK_WIDTH`` channels
  wide, each one plain convolution (more multiply-adds by zeros, far better
  kernels), concatenated. Plain convolutions have gradients in every dtype.
"""

import contextlib
import functools
import threading

import keras
import numpy as np

from keras_resnext import grouped_ops

# Narrowest super-group of the blocked formulation, in input channels. Measured
# without oneDNN on a 2-core AVX2 EPYC (docs/cpu.md, "Training formulations
# tried"), one grouped 3x3's forward + both gradients at batch 16: 16 is the
# fastest at the ResNeXt-50 stage shapes where it differs from 32 (56x56x128:
# 185 ms vs 299; 28x28x256: 95 vs 122; 14x14x512: 50 vs 62; 8 and 64 slower)
# and its forward alone is no slower. Whole ResNeXt-50 training step vs
# keras.applications ResNet-50, same process: 0.74-0.82x at 16 vs 0.73-0.76x
# at 32 over three runs; inference unchanged (0.78-0.83x both).
BLOCK_WIDTH = 16

_state = threading.local()


@contextlib.contextmanager
def portable_graph():
    """Traces every grouped convolution as the native op, on any runtime.

    Exports trace under it, so that an artifact is the same whichever machine
    wrote it: one grouped op per convolution (single ONNX ``Conv`` / TFLite
    ``CONV_2D`` nodes), runnable with and without oneDNN.
    """
    previous = getattr(_state, "portable", False)
    _state.portable = True
    try:
        yield
    finally:
        _state.portable = previous


def _probe_tensors(dtype):
    """A 2-group convolution's input and kernel, eagerly."""
    import tensorflow as tf

    x = tf.reshape(tf.range(36, dtype="float32") / 36.0, (1, 3, 3, 4))
    kernel = tf.reshape(tf.range(72, dtype="float32") / 72.0 - 0.5, (3, 3, 2, 4))
    return tf.cast(x, dtype), tf.cast(kernel, dtype)


@functools.lru_cache(maxsize=None)
def grouped_forward_kernel(dtype="float32"):
    """Whether TensorFlow has a grouped convolution forward kernel for ``dtype``.

    Probed once per dtype, eagerly, on the default device. Every runtime has
    one in float32; which one is fast is ``native_grouped_conv_supported``'s
    question.
    """
    import tensorflow as tf

    with tf.init_scope():
        try:
            x, kernel = _probe_tensors(dtype)
            tf.nn.convolution(x, kernel, padding="SAME").numpy()
            return True
        except tf.errors.OpError:
            return False


@functools.lru_cache(maxsize=None)
def native_grouped_conv_supported(dtype="float32"):
    """Whether TensorFlow has grouped convolution gradient kernels for ``dtype``.

    TensorFlow's CPU kernels compute grouped convolution gradients only through
    oneDNN (``TF_ENABLE_ONEDNN_OPTS=1``, the default only on CPUs with AVX-512
    neural-network features), and only in float32; GPU kernels (cuDNN) support
    them. Where they exist, the grouped forward kernel is the fast one too.
    Probed once per dtype, eagerly, on the default device.

    Args:
        dtype: compute dtype of the convolution.

    Returns:
        True if both gradient kernels of a 2-group convolution run.
    """
    import tensorflow as tf

    if not grouped_forward_kernel(dtype):
        return False
    with tf.init_scope():
        try:
            x, kernel = _probe_tensors(dtype)
            y = tf.nn.convolution(x, kernel, padding="SAME")
            # The two gradient kernels, called directly: a GradientTape records
            # nothing under init_scope.
            common = dict(out_backprop=y, strides=[1, 1, 1, 1], padding="SAME")
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, **common).numpy()
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), **common).numpy()
            return True
        except tf.errors.OpError:
            return False


def native_grouped_forward_supported(dtype="float32"):
    """Whether the fast grouped forward kernel runs ``dtype`` (gradients or not).

    The fast kernels are those of a runtime with float32 grouped gradients
    (oneDNN, cuDNN): there, a dtype without gradient kernels may still have
    the forward. Without them (TensorFlow's CPU default on CPUs without
    AVX-512) the grouped forward runs but is the slow one.
    """
    return native_grouped_conv_supported("float32") and grouped_forward_kernel(dtype)


@functools.lru_cache(maxsize=None)
def fused_grouped_conv_supported(dtype="float32"):
    """Whether Grappler may fuse a grouped convolution with what follows it.

    Inside a ``tf.function`` the remapper fuses ``Conv2D + FusedBatchNorm
    (+ Relu)`` and ``Conv2D + BiasAdd (+ Relu)``. oneDNN's fused kernel has
    groups; the default CPU one (``_FusedConv2D``) raises "Fused conv
    implementation does not support grouped convolutions for now". This runs
    both patterns as a graph, once per dtype, and compares them with the
    unfused eager result.

    Returns:
        True if both fused graphs run and agree with the eager result (within
        1e-3 in float32, 3e-2 in 16-bit types: their rounding).
    """
    import tensorflow as tf

    with tf.init_scope():
        x, kernel = _probe_tensors(dtype)
        ones = tf.ones((4,), "float32")

        def batch_norm_relu(x, kernel):
            y = tf.nn.convolution(x, kernel, padding="SAME")
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                y, ones, ones, mean=ones, variance=ones, is_training=False)
            return tf.nn.relu(y)

        def bias_add_relu(x, kernel):
            y = tf.nn.convolution(x, kernel, padding="SAME")
            return tf.nn.relu(tf.nn.bias_add(y, tf.cast(ones, dtype)))

        tolerance = 1e-3 if dtype == "float32" else 3e-2
        try:
            for pattern in (batch_norm_relu, bias_add_relu):
                got = tf.function(pattern, jit_compile=False)(x, kernel)
                want = pattern(x, kernel)
                if not np.allclose(np.asarray(tf.cast(got, "float32")),
                                   np.asarray(tf.cast(want, "float32")),
                                   rtol=tolerance, atol=tolerance):
                    return False
            return True
        except tf.errors.OpError:
            return False


@functools.lru_cache(maxsize=None)
def fused_batch_norm_supported(dtype="float32"):
    """Whether ``FusedBatchNormV3`` and its gradient run with ``dtype`` inputs.

    float32 parameters and statistics, inputs and outputs in ``dtype``
    (TensorFlow's CPU kernels take float16 and bfloat16 with and without
    oneDNN). Probed once per dtype, eagerly, on the default device.
    """
    import tensorflow as tf

    if dtype == "float32":
        return True
    with tf.init_scope():
        try:
            x, _ = _probe_tensors(dtype)
            ones, zeros = tf.ones((4,)), tf.zeros((4,))
            for training in (True, False):
                y = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=ones, offset=zeros, mean=zeros if training else ones,
                    variance=zeros if training else ones, is_training=training)
                tf.raw_ops.FusedBatchNormGradV3(
                    y_backprop=y.y, x=x, scale=ones, reserve_space_1=y.reserve_space_1,
                    reserve_space_2=y.reserve_space_2, reserve_space_3=y.reserve_space_3,
                    is_training=training).x_backprop.numpy()
            return True
        except tf.errors.OpError:
            return False


def block_merge(groups, group_width):
    """How many groups one super-group of the blocked formulation holds.

    The smallest divisor of ``groups`` that makes a super-group at least
    ``BLOCK_WIDTH`` input channels wide (``groups`` if none does).
    """
    return grouped_ops.block_merge(groups, group_width, BLOCK_WIDTH)


# Backend-neutral (keras.ops): the JAX formulation uses the same kernels.
block_diagonal_kernels = grouped_ops.block_diagonal_kernels


def grouped_convolution(inputs, kernel, *, strides, padding, dilation_rate,
                        data_format, groups):
    """A grouped convolution with plain TensorFlow ops (no XLA).

    Args:
        inputs: 4-D tensor.
        kernel: ``(kh, kw, in_channels // groups, out_channels)``.
        strides: pair of ints.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: pair of ints.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        groups: number of groups.

    Returns:
        The convolution output.
    """
    import tensorflow as tf

    tf_format = "NHWC" if data_format == "channels_last" else "NCHW"
    conv = functools.partial(
        tf.nn.convolution, strides=strides, padding=padding.upper(),
        dilations=dilation_rate, data_format=tf_format)
    if groups == 1:
        return conv(inputs, kernel)
    dtype = inputs.dtype.name
    if getattr(_state, "portable", False):
        return _fenced(conv(inputs, kernel))
    if native_grouped_conv_supported(dtype):
        y = conv(inputs, kernel)
    elif native_grouped_forward_supported(dtype):
        y = _native_forward_float32_gradients(
            inputs, tf.convert_to_tensor(kernel), conv, strides=strides,
            padding=padding, dilation_rate=dilation_rate, data_format=tf_format)
    else:
        return _blocked(inputs, tf.convert_to_tensor(kernel), conv, groups=groups,
                        axis=-1 if tf_format == "NHWC" else 1)
    # In the user's process the fence is needed only where the remapper's fused
    # kernel has no groups; with oneDNN it stops a fusion worth ~5% of
    # ResNeXt-50 inference at batch 16 (docs/cpu.md).
    return y if fused_grouped_conv_supported(dtype) else _fenced(y)


def _fenced(y):
    """``y`` behind ``EnsureShape``: a barrier Grappler keeps (no ``_FusedConv2D``)."""
    import tensorflow as tf

    return tf.ensure_shape(y, y.shape)


def _blocked(inputs, kernel, conv, *, groups, axis):
    """Block-diagonal super-groups, one plain convolution each, concatenated."""
    import tensorflow as tf

    kernels = block_diagonal_kernels(kernel, groups, block_merge(groups, kernel.shape[2]))
    if len(kernels) == 1:
        return conv(inputs, kernels[0])
    parts = tf.split(inputs, len(kernels), axis=axis)
    return tf.concat([conv(x, k) for x, k in zip(parts, kernels)], axis=axis)


def _native_forward_float32_gradients(inputs, kernel, conv, *, strides, padding,
                                      dilation_rate, data_format):
    """The native grouped forward in the inputs' dtype; gradients in float32.

    For a dtype whose grouped forward kernel exists but whose gradient kernels
    do not (none on the CPUs measured, docs/cpu.md: with oneDNN, bfloat16 and
    float16 have both or neither). The layer cannot tell inference from
    training: ``convolution_op`` gets no ``training`` flag, ``training=False``
    still takes gradients when fine-tuning with frozen BatchNorm, and no
    public API says whether a tape is recording. So the forward is always the
    native op, and a custom gradient computes both gradients with the float32
    grouped kernels (which exist wherever this runs) from the saved inputs:
    no forward recomputation.
    """
    import tensorflow as tf

    def four(pair):
        return [1, *pair, 1] if data_format == "NHWC" else [1, 1, *pair]

    options = dict(strides=four(strides), padding=padding.upper(),
                   dilations=four(dilation_rate), data_format=data_format)

    @tf.custom_gradient
    def forward(x, k):
        def gradients(dy):
            dy32 = tf.cast(dy, "float32")
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=tf.cast(k, "float32"),
                out_backprop=dy32, **options)
            dk = tf.raw_ops.Conv2DBackpropFilter(
                input=tf.cast(x, "float32"), filter_sizes=tf.shape(k),
                out_backprop=dy32, **options)
            return tf.cast(dx, x.dtype), tf.cast(dk, k.dtype)

        return conv(x, k), gradients

    return forward(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_resnext")
class GroupConv2D(keras.layers.Conv2D):
    """``Conv2D(groups=C)`` with a faster graph per Keras backend.

    Same arguments, weights and config as ``keras.layers.Conv2D``; a model
    saved with it reloads into the same numbers, on any backend. TensorFlow
    runs ``grouped_convolution`` (plain ``tf.nn.convolution``, no XLA); JAX and
    PyTorch run ``keras_resnext.grouped_ops`` (block-diagonal dense convs on
    JAX, copy-free channels-last ``conv2d`` on PyTorch); other backends, or
    paddings those do not handle, run the parent's op.
    """

    def convolution_op(self, inputs, kernel):
        args = dict(strides=self.strides, padding=self.padding,
                    dilation_rate=self.dilation_rate, data_format=self.data_format,
                    groups=self.groups)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return grouped_convolution(inputs, kernel, **args)
        if self.groups > 1 and backend in grouped_ops.BACKENDS:
            outputs = grouped_ops.convolution(inputs, kernel, **args)
            if outputs is not None:
                return outputs
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_resnext")
class PointwiseConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose 1x1 convolutions are a matrix product on JAX (CPU).

    Same arguments, weights and config as its parent. On JAX on a CPU a dense
    1x1 convolution runs ``keras_resnext.grouped_ops.pointwise_convolution``
    (XLA's CPU backend computes the kernel gradient of Keras' 1x1 convolution
    several times slower than the same dot); everything else runs the
    parent's op.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            outputs = grouped_ops.pointwise_convolution(
                inputs, kernel, strides=self.strides, padding=self.padding,
                dilation_rate=self.dilation_rate, data_format=self.data_format)
            if outputs is not None:
                return outputs
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_resnext")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with a faster graph on JAX and PyTorch.

    Same arguments, weights and config as its parent. JAX (on a CPU) and
    PyTorch run ``keras_resnext.grouped_ops.depthwise_convolution`` (shifted
    slices on JAX, copy-free channels-last ``conv2d`` on PyTorch); other
    backends, TensorFlow included (its native depthwise kernels are fast), run
    the parent's op.
    """

    def call(self, inputs):
        outputs = grouped_ops.depthwise_convolution(
            inputs, self.kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)
        if outputs is None:
            return super().call(inputs)
        if self.use_bias:
            shape = ((1, 1, 1, -1) if self.data_format == "channels_last"
                     else (1, -1, 1, 1))
            outputs = keras.ops.add(outputs, keras.ops.reshape(self.bias, shape))
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="keras_resnext")
class BatchNorm(keras.layers.BatchNormalization):
    """``BatchNormalization`` that runs TensorFlow's fused kernel when it can.

    Keras 3 computes batch norm as separate moments and element-wise ops; the
    fused ``FusedBatchNormV3`` kernel (oneDNN on CPUs, cuDNN on GPUs) does the
    forward and backward passes in one op each, which makes a ResNeXt-50
    training step ~30% faster on a CPU (wide bottlenecks mean many BN
    activations). Under PyTorch, ``torch.nn.functional.batch_norm`` plays that
    part (``_torch_call``). Same weights, config, moving-statistics update
    (biased batch variance, Keras' momentum convention) and outputs as the
    parent; the parent runs whenever the fast path does not apply (JAX, whose
    XLA fuses Keras' ops, other backends, masks, renorm, synchronized BN,
    inputs that are not 4-D with the channel axis last or 1).
    """

    def _fused_data_format(self, inputs):
        if (keras.backend.backend() not in ("tensorflow", "torch") or self.renorm or
                self.synchronized or len(inputs.shape) != 4):
            return None
        axis = [a % 4 for a in (self.axis if isinstance(self.axis, (list, tuple))
                                else [self.axis])]
        return {(3,): "NHWC", (1,): "NCHW"}.get(tuple(axis))

    def call(self, inputs, training=None, mask=None):
        data_format = self._fused_data_format(inputs)
        if mask is not None or data_format is None:
            return super().call(inputs, training=training, mask=mask)
        if keras.backend.backend() == "torch":
            # One value per channel has no unbiased variance (PyTorch refuses it).
            if training and self.trainable and inputs.numel() <= inputs.shape[
                    -1 if data_format == "NHWC" else 1]:
                return super().call(inputs, training=training, mask=mask)
            return self._torch_call(inputs, training, data_format)
        import tensorflow as tf

        # float32 statistics and parameters whatever the compute and variable
        # dtypes (FusedBatchNormV3 takes float32 scale/offset/mean/variance).
        # 16-bit inputs go in as they are where the kernel takes them: it
        # computes in float32 inside and returns the input dtype, as casting
        # to float32 and back would, but without the casts oneDNN fuses it
        # with the convolution before it (bfloat16 ResNeXt-50 inference went
        # from 0.74x to 1.19x ResNet-50's, training from 1.06x to 1.39x;
        # docs/cpu.md).
        x = inputs if fused_batch_norm_supported(inputs.dtype.name) else tf.cast(
            inputs, "float32")
        channels = x.shape[-1] if data_format == "NHWC" else x.shape[1]
        gamma = (tf.cast(self.gamma, "float32") if self.scale
                 else tf.ones((channels,), "float32"))
        beta = (tf.cast(self.beta, "float32") if self.center
                else tf.zeros((channels,), "float32"))
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format=data_format,
                is_training=True)
            # The kernel returns the unbiased variance; Keras tracks the biased one.
            n = tf.cast(tf.size(x) // channels, "float32")
            variance = variance * (n - 1.0) / n
            self.moving_mean.assign(tf.cast(
                moving_mean * self.momentum + mean * (1.0 - self.momentum),
                self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(
                moving_variance * self.momentum + variance * (1.0 - self.momentum),
                self.moving_variance.dtype))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=moving_mean,
                variance=moving_variance, epsilon=self.epsilon,
                data_format=data_format, is_training=False)
        return tf.cast(y, self.compute_dtype)

    def _torch_call(self, inputs, training, data_format):
        """PyTorch's fused batch norm, on a channels-last view of NHWC inputs.

        Keras' PyTorch batch norm is a dozen element-wise ops and reductions
        forward and as many backward: about half of a ResNeXt-50 training
        step on a CPU (torch profiler, docs/cpu.md); ``batch_norm`` is one
        kernel each way. Same statistics and moving-average update as Keras.
        """
        import torch.nn.functional as F

        x = keras.ops.cast(inputs, "float32")
        if data_format == "NHWC":
            x = x.permute(0, 3, 1, 2)  # a view: channels-last memory, no copy
        gamma = keras.ops.cast(self.gamma, "float32") if self.scale else None
        beta = keras.ops.cast(self.beta, "float32") if self.center else None
        if training and self.trainable:
            # momentum=1 leaves the batch mean and (unbiased) variance in the buffers.
            mean = x.new_zeros(x.shape[1])
            variance = x.new_ones(x.shape[1])
            y = F.batch_norm(x, mean, variance, gamma, beta, training=True,
                             momentum=1.0, eps=self.epsilon)
            n = x.numel() // x.shape[1]
            variance = variance * ((n - 1) / n)  # Keras tracks the biased variance
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(keras.ops.cast(
                    keras.ops.cast(moving, "float32") * self.momentum
                    + batch * (1.0 - self.momentum), moving.dtype))
        else:
            y = F.batch_norm(x, keras.ops.cast(self.moving_mean, "float32"),
                             keras.ops.cast(self.moving_variance, "float32"), gamma, beta,
                             training=False, eps=self.epsilon)
        if data_format == "NHWC":
            y = y.permute(0, 2, 3, 1)
        return keras.ops.cast(y, self.compute_dtype)
