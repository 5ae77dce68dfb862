"""What a convolution's fused BatchNorm costs against a fused bias, per ResNeXt-50 shape.

Inside a ``tf.function`` Grappler fuses ``Conv2D + FusedBatchNorm + Relu`` (the
model as built) and ``Conv2D + BiasAdd + Relu`` (after
``keras_resnext.fold_batch_norm``) into one kernel each. This times both, with
the weights as variables as in the user's process, on the grouped 3x3 and one
1x1 of each ResNeXt-50 stage (batch 16, 224 px), in interleaved rounds; then
each stage's last 1x1 with the block's residual addition and ReLU, which oneDNN
fuses into the convolution after a bias but not after a BatchNorm. Used for
issue 20 (why folding speeds ResNeXt-50's inference up); results in
docs/cpu.md. A probe, not the benchmark: applications/benchmark.py times models.

    python tools/tf_conv_bn_fusion.py --rounds 7
"""

import argparse

import numpy as np

# (height = width, in-channels, out-channels, kernel size, groups): ResNeXt-50 32x4d.
SHAPES = ((56, 128, 128, 3, 32), (28, 256, 256, 3, 32), (14, 512, 512, 3, 32),
          (7, 1024, 1024, 3, 32), (56, 256, 128, 1, 1), (28, 512, 256, 1, 1),
          (14, 1024, 512, 1, 1), (7, 2048, 1024, 1, 1))
# Each stage's last 1x1 (bottleneck width -> block output), added to the shortcut.
RESIDUAL_SHAPES = ((56, 128, 256, 1, 1), (28, 256, 512, 1, 1), (14, 512, 1024, 1, 1),
                   (7, 1024, 2048, 1, 1))


def candidates(shape, rng):
    """``{"BatchNorm": fn, "bias": fn}``: the two fused patterns of one conv shape.

    Each takes ``x`` or ``(x, shortcut)``, and adds the shortcut before the ReLU.
    """
    import tensorflow as tf

    _, cin, cout, k, groups = shape
    kernel = tf.Variable(rng.normal(0, 0.05, (k, k, cin // groups, cout)).astype("float32"))
    gamma, beta, mean = (tf.Variable(rng.normal(m, 0.1, cout).astype("float32"))
                         for m in (1.0, 0.0, 0.0))
    variance = tf.Variable(rng.uniform(0.5, 1.5, cout).astype("float32"))

    def add(y, shortcut):
        return y if shortcut is None else y + shortcut

    @tf.function
    def batch_norm(x, shortcut=None):
        y = tf.nn.convolution(x, kernel, padding="SAME")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            y, gamma, beta, mean=mean, variance=variance, is_training=False)
        return tf.nn.relu(add(y, shortcut))

    @tf.function
    def bias(x, shortcut=None):
        y = tf.nn.bias_add(tf.nn.convolution(x, kernel, padding="SAME"), beta)
        return tf.nn.relu(add(y, shortcut))

    return {"BatchNorm": batch_norm, "bias": bias}


def time_rounds(fns, args, rounds, steps):
    """Median milliseconds per call ``fn(*args)`` of each of ``fns``, interleaved by round."""
    from keras_resnext import benchmark

    times = {name: [] for name in fns}
    for fn in fns.values():
        benchmark._time(fn, args, 2)  # trace and warm up
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(benchmark._time(fn, args, steps) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    from keras_resnext import benchmark

    m = benchmark.cpu_description()
    print(f"{m['cpu']}; flags: {' '.join(m['cpu_flags'])}; oneDNN "
          f"{'on' if m['onednn_enabled'] else 'off'} (TF_ENABLE_ONEDNN_OPTS="
          f"{m['onednn_setting']}); batch {args.batch}, median of {args.rounds} rounds\n")
    print("| conv | + FusedBatchNorm + Relu, ms | + BiasAdd + Relu, ms | ratio |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for residual, shapes in ((False, SHAPES), (True, RESIDUAL_SHAPES)):
        for shape in shapes:
            size, cin, cout, k, groups = shape
            inputs = [rng.normal(size=(args.batch, size, size, c)).astype("float32")
                      for c in ((cin, cout) if residual else (cin,))]
            ms = time_rounds(candidates(shape, rng), inputs, args.rounds, args.steps)
            kind = f"{k}x{k}" + (f", {groups} groups" if groups > 1 else "")
            kind += " + shortcut" if residual else ""
            print(f"| {size}x{size}, {cin}->{cout}, {kind} | {ms['BatchNorm']:.1f} | "
                  f"{ms['bias']:.1f} | {ms['BatchNorm'] / ms['bias']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
