"""Grouped 2-D convolution on the JAX and PyTorch backends.

``GroupConv2D`` (keras_resnext/layers.py) sends its convolution here under
JAX and PyTorch; the TensorFlow formulation lives in layers.py. Each backend
gets the graph that measured fastest for one grouped 3x3 at ResNeXt-50's
stage shapes, forward and both gradients (docs/cpu.md, "JAX" and "PyTorch"):

- **JAX** on a CPU (on GPUs and TPUs Keras' own op, which cuDNN runs well):
  Keras calls ``lax.conv_general_dilated(feature_group_count=C)``.
  XLA's CPU backend runs its gradients hundreds of times slower than a dense
  convolution of the same size (12.6 s against 76 ms for the blocked form at
  14x14x512, batch 8; no XLA CPU flag changes that: ``xla_cpu_use_onednn``,
  ``xla_cpu_use_xnnpack`` and the oneDNN custom call were tried). Here groups
  are merged into block-diagonal super-groups, each one dense convolution,
  concatenated: the formulation of TensorFlow's blocked path.
- **PyTorch**: Keras copies every input NHWC -> NCHW -> NHWC ("channels last"
  memory format) around ``conv2d``. Calling ``conv2d`` on the NHWC tensor seen
  through ``permute`` (already channels-last in memory, no copy) runs the same
  oneDNN grouped kernel 1.3-2x faster forward and backward; the grouped kernel
  beats block-diagonal dense convolutions there.
"""

import keras

# Narrowest super-group of the JAX formulation, in input channels (see
# JAX_BLOCK_WIDTH_NOTE in docs/cpu.md for the measurements behind it).
JAX_BLOCK_WIDTH = 16
JAX_MAX_SUPER_GROUPS = None

BACKENDS = ("jax", "torch")


def _jax_on_cpu():
    """Whether Keras runs JAX on a CPU: GPUs and TPUs have fast kernels (cuDNN) for
    what this module rewrites, so Keras' own ops run there."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def convolution(inputs, kernel, *, strides, padding, dilation_rate, data_format,
                groups):
    """A grouped convolution with the current backend's fastest graph.

    Args:
        inputs: 4-D tensor.
        kernel: ``(kh, kw, in_channels // groups, out_channels)``.
        strides: pair of ints.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: pair of ints.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        groups: number of groups.

    Returns:
        The convolution output, or None where this module has no faster graph
        than Keras' own (another backend, JAX on an accelerator, or a padding
        it does not handle).
    """
    args = dict(strides=tuple(strides), padding=padding,
                dilation_rate=tuple(dilation_rate), data_format=data_format,
                groups=groups)
    if _jax_on_cpu():
        return jax_convolution(inputs, kernel, **args)
    if keras.backend.backend() == "torch":
        return torch_convolution(inputs, kernel, **args)
    return None


def block_merge(groups, group_width, block_width):
    """How many groups one block-diagonal super-group holds.

    The smallest divisor of ``groups`` that makes a super-group at least
    ``block_width`` input channels wide (``groups`` if none does).
    """
    for merge in range(1, groups + 1):
        if groups % merge == 0 and merge * group_width >= block_width:
            return merge
    return groups


def block_diagonal_kernels(kernel, groups, merge):
    """Splits a grouped kernel into ``groups // merge`` block-diagonal dense kernels.

    Backend-neutral (``keras.ops``).

    Args:
        kernel: ``(kh, kw, cin // groups, cout)``, group ``j`` owning output
            channels ``[j * cout // groups, (j + 1) * cout // groups)``.
        groups: groups of ``kernel``.
        merge: groups per super-group.

    Returns:
        A list of ``(kh, kw, merge * cin // groups, merge * cout // groups)``
        kernels whose off-diagonal blocks are zeros.
    """
    ops = keras.ops
    kh, kw, group_in, cout = kernel.shape
    group_out = cout // groups
    supers = groups // merge
    if merge == 1:
        return ops.split(kernel, groups, axis=-1)
    blocks = ops.reshape(kernel, (kh, kw, group_in, supers, merge, group_out))
    eye = ops.eye(merge, dtype=kernel.dtype)
    # full[.., n, i, s, j, m] = blocks[.., i, s, j, m] * (n == j)
    full = ops.einsum("abisjm,nj->abnisjm", blocks, eye)
    full = ops.reshape(full, (kh, kw, merge * group_in, supers, merge * group_out))
    return ops.unstack(full, axis=3)


def jax_convolution(inputs, kernel, *, strides, padding, dilation_rate, data_format,
                    groups):
    """Block-diagonal super-groups, each one dense ``lax`` convolution."""
    from jax import lax
    import jax.numpy as jnp

    layout = "NHWC" if data_format == "channels_last" else "NCHW"
    axis = -1 if layout == "NHWC" else 1

    def conv(x, k):
        return lax.conv_general_dilated(
            x, k, strides, padding.upper(), rhs_dilation=dilation_rate,
            dimension_numbers=(layout, "HWIO", layout))

    # As Keras' own conv: the kernel (autocast under a mixed policy) sets the dtype.
    kernel = keras.ops.convert_to_tensor(kernel)
    inputs = keras.ops.convert_to_tensor(inputs, dtype=kernel.dtype)
    width = JAX_BLOCK_WIDTH
    if JAX_MAX_SUPER_GROUPS:
        width = max(width, kernel.shape[2] * groups // JAX_MAX_SUPER_GROUPS)
    merge = block_merge(groups, kernel.shape[2], width)
    kernels = block_diagonal_kernels(kernel, groups, merge)
    if len(kernels) == 1:
        return conv(inputs, kernels[0])
    parts = jnp.split(inputs, len(kernels), axis=axis)
    return jnp.concatenate([conv(x, k) for x, k in zip(parts, kernels)], axis=axis)


def pointwise_convolution(inputs, kernel, *, strides, padding, dilation_rate,
                          data_format):
    """A dense 1x1 convolution as one matrix product, on JAX on a CPU.

    XLA's CPU backend runs the kernel gradient of a 1x1 convolution as a
    convolution whose window is the whole feature map, 2-7x slower than the
    matrix product ``x^T dy`` it is (ResNeXt-50's 1x1 shapes, batch 16:
    forward + both gradients 5.5 s against 1.2 s in all; docs/cpu.md, "JAX").
    As ``(n * h * w, c_in) @ (c_in, c_out)`` the forward and both gradients
    are plain dots. A 1x1 window pads nothing with either padding: a stride
    reads every stride-th pixel.

    Args:
        inputs: 4-D tensor.
        kernel: ``(1, 1, in_channels, out_channels)`` (other sizes: None).
        strides, padding, dilation_rate, data_format: as ``keras.ops.conv``.

    Returns:
        The convolution output, or None where Keras' own op is used (another
        backend, JAX on an accelerator, a kernel larger than 1x1, a dilation,
        channels_first).
    """
    if (not _jax_on_cpu() or tuple(kernel.shape[:2]) != (1, 1)
            or tuple(dilation_rate) != (1, 1) or data_format != "channels_last"):
        return None
    import jax.numpy as jnp

    del padding  # "valid" and "same" are the same for a 1x1 window
    kernel = keras.ops.convert_to_tensor(kernel)
    x = keras.ops.convert_to_tensor(inputs, dtype=kernel.dtype)
    if tuple(strides) != (1, 1):
        x = x[:, ::strides[0], ::strides[1], :]
    y = jnp.reshape(x, (-1, x.shape[-1])) @ kernel[0, 0]
    return jnp.reshape(y, (*x.shape[:3], kernel.shape[-1]))


def torch_padding(padding, kernel_size, strides, dilation_rate):
    """``conv2d``'s symmetric padding for Keras' ``padding``, or None.

    None where "same" would need asymmetric padding (a stride above 1, or an
    even effective kernel size): Keras' own convolution pads those.
    """
    if padding == "valid":
        return (0, 0)
    spans = [d * (k - 1) for k, d in zip(kernel_size, dilation_rate)]
    if any(s != 1 for s in strides) or any(span % 2 for span in spans):
        return None
    return tuple(span // 2 for span in spans)


def torch_convolution(inputs, kernel, *, strides, padding, dilation_rate, data_format,
                      groups):
    """``torch.nn.functional.conv2d`` on views: channels-last memory, no copies."""
    import torch.nn.functional as F

    pads = torch_padding(padding, kernel.shape[:2], strides, dilation_rate)
    if pads is None:
        return None
    kernel = keras.ops.convert_to_tensor(kernel)
    inputs = keras.ops.convert_to_tensor(inputs, dtype=kernel.dtype)
    channels_last = data_format == "channels_last"
    x = inputs.permute(0, 3, 1, 2) if channels_last else inputs
    # (kh, kw, in // groups, out) -> (out, in // groups, kh, kw), a view.
    y = F.conv2d(x, kernel.permute(3, 2, 0, 1), stride=strides, padding=pads,
                 dilation=dilation_rate, groups=groups)
    return y.permute(0, 2, 3, 1) if channels_last else y


def depthwise_convolution(inputs, kernel, *, strides, padding, dilation_rate,
                          data_format):
    """A depthwise convolution with the current backend's fastest graph.

    - JAX on a CPU: Keras' ``feature_group_count=C`` convolution is 6-50x
      slower forward and 10-50x slower in gradients than a sum of ``kh * kw``
      shifted slices times per-channel weights (ReXNet's shapes, batch 8;
      docs/cpu.md), which XLA fuses into one loop.
    - PyTorch: ``conv2d(groups=C)`` on a channels-last view, as for grouped
      convolutions (2-10x faster forward, gradients no slower).

    Args:
        inputs: 4-D tensor.
        kernel: ``(kh, kw, channels, depth_multiplier)``.
        strides, padding, dilation_rate, data_format: as ``keras.ops.depthwise_conv``.

    Returns:
        The output (channel ``c * depth_multiplier + j`` from input channel
        ``c``), or None where Keras' own op is used.
    """
    args = dict(strides=tuple(strides), padding=padding,
                dilation_rate=tuple(dilation_rate), data_format=data_format)
    if _jax_on_cpu():
        return jax_depthwise_convolution(inputs, kernel, **args)
    if keras.backend.backend() == "torch":
        kh, kw, channels, multiplier = kernel.shape
        kernel = keras.ops.reshape(kernel, (kh, kw, 1, channels * multiplier))
        return torch_convolution(inputs, kernel, groups=channels, **args)
    return None


def jax_depthwise_convolution(inputs, kernel, *, strides, padding, dilation_rate,
                              data_format):
    """Sum over kernel taps of strided input slices times per-channel weights."""
    from jax import lax
    import jax.numpy as jnp

    kernel = keras.ops.convert_to_tensor(kernel)
    x = keras.ops.convert_to_tensor(inputs, dtype=kernel.dtype)
    if data_format == "channels_first":
        x = jnp.transpose(x, (0, 2, 3, 1))
    kh, kw, channels, multiplier = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation_rate
    window = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    pads = lax.padtype_to_pads(x.shape[1:3], window, strides, padding.upper())
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    n, h, w, _ = x.shape
    out_h, out_w = (h - window[0]) // sh + 1, (w - window[1]) // sw + 1
    # Accumulate in float32 under mixed policies, as convolutions do.
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    out = jnp.zeros((n, out_h, out_w, channels, multiplier), accumulate)
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(x, (0, i * dh, j * dw, 0),
                            (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1,
                             channels), (1, sh, sw, 1))
            out = out + tap[..., None].astype(accumulate) * kernel[i, j].astype(accumulate)
    out = out.reshape(n, out_h, out_w, channels * multiplier).astype(x.dtype)
    return jnp.transpose(out, (0, 3, 1, 2)) if data_format == "channels_first" else out
