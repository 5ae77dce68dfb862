"""Grouped convolution that runs as a plain TensorFlow op.

Keras 3 sends every grouped convolution under the TensorFlow backend through
``tf.function(jit_compile=True)`` (``keras/src/backend/tensorflow/nn.py::conv``).
On a CPU that is ~24x slower for a ResNeXt training step, and exporters cannot
translate the XLA-wrapped call (tf2onnx leaves a ``StatefulPartitionedCall``
that onnxruntime refuses). ``GroupConv2D`` keeps the weights and config of
``keras.layers.Conv2D(groups=C)`` and only replaces the op it calls.
"""

import functools

import keras


@functools.lru_cache(maxsize=None)
def native_grouped_conv_supported(dtype="float32"):
    """Whether TensorFlow runs a grouped ``tf.nn.convolution`` and its gradients.

    TensorFlow's CPU kernels compute grouped convolution gradients only through
    oneDNN; with ``TF_ENABLE_ONEDNN_OPTS=0`` the forward pass runs but the
    backward pass raises ``InvalidArgumentError`` ("Gradients for grouped
    convolutions are not supported on CPU"); float16 has no grouped CPU
    gradient even with oneDNN. GPU kernels (cuDNN) support both. The answer is
    probed once per dtype, eagerly, on the default device.

    Args:
        dtype: compute dtype of the convolution.

    Returns:
        True if a 2-group convolution and both its gradients run.
    """
    import tensorflow as tf

    with tf.init_scope():
        try:
            x = tf.ones((1, 3, 3, 4), dtype=dtype)
            kernel = tf.ones((3, 3, 2, 4), dtype=dtype)
            y = tf.nn.convolution(x, kernel, padding="SAME")
            # The two gradient kernels, called directly: a GradientTape records
            # nothing under init_scope.
            common = dict(out_backprop=y, strides=[1, 1, 1, 1], padding="SAME")
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, **common).numpy()
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), **common).numpy()
            return True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False


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
    if groups == 1 or native_grouped_conv_supported(inputs.dtype.name):
        return conv(inputs, kernel)
    # Fallback when the runtime has no grouped kernel: one convolution per group.
    axis = -1 if data_format == "channels_last" else 1
    input_groups = tf.split(inputs, groups, axis=axis)
    kernel_groups = tf.split(kernel, groups, axis=-1)
    outputs = [conv(x, k) for x, k in zip(input_groups, kernel_groups)]
    return tf.concat(outputs, axis=axis)


@keras.saving.register_keras_serializable(package="keras_resnext")
class GroupConv2D(keras.layers.Conv2D):
    """``Conv2D(groups=C)`` that runs plain ``tf.nn.convolution`` under TensorFlow.

    Same arguments, weights and config as ``keras.layers.Conv2D``; a model
    saved with it reloads into the same numbers. Under other Keras backends it
    behaves exactly like its parent.
    """

    def convolution_op(self, inputs, kernel):
        if keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        return grouped_convolution(
            inputs, kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
            groups=self.groups)



@keras.saving.register_keras_serializable(package="keras_resnext")
class BatchNorm(keras.layers.BatchNormalization):
    """``BatchNormalization`` that runs TensorFlow's fused kernel when it can.

    Keras 3 computes batch norm as separate moments and element-wise ops; the
    fused ``FusedBatchNormV3`` kernel (oneDNN on CPUs, cuDNN on GPUs) does the
    forward and backward passes in one op each, which makes a ResNeXt-50
    training step ~30% faster on a CPU (wide bottlenecks mean many BN
    activations). Same weights, config, moving-statistics update (biased batch
    variance, Keras' momentum convention) and outputs as the parent; the parent
    runs whenever the fast path does not apply (other backends, masks, renorm,
    synchronized BN, inputs that are not 4-D with the channel axis last or 1).
    """

    def _fused_data_format(self, inputs):
        if (keras.backend.backend() != "tensorflow" or self.renorm or
                self.synchronized or len(inputs.shape) != 4):
            return None
        axis = [a % 4 for a in (self.axis if isinstance(self.axis, (list, tuple))
                                else [self.axis])]
        return {(3,): "NHWC", (1,): "NCHW"}.get(tuple(axis))

    def call(self, inputs, training=None, mask=None):
        data_format = self._fused_data_format(inputs)
        if mask is not None or data_format is None:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # float32 statistics whatever the compute dtype, as the parent does.
        x = tf.cast(inputs, "float32")
        channels = x.shape[-1] if data_format == "NHWC" else x.shape[1]
        gamma = self.gamma if self.scale else tf.ones((channels,), "float32")
        beta = self.beta if self.center else tf.zeros((channels,), "float32")
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format=data_format,
                is_training=True)
            # The kernel returns the unbiased variance; Keras tracks the biased one.
            n = tf.cast(tf.size(x) // channels, "float32")
            variance = variance * (n - 1.0) / n
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum
                + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon,
                data_format=data_format, is_training=False)
        return tf.cast(y, self.compute_dtype)
