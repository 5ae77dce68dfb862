"""What a convolution's fused BatchNorm costs against a fused bias, per ResNeXt-50 shape.

Inside a ``tf.function`` Grappler fuses ``Conv2D + FusedBatchNorm + Relu`` (the
model as built) and ``Conv2D + BiasAdd + Relu`` (after
``keras_resnext.fold_batch_norm``) into one kernel each. This times both, with
the weights as variables as in the user's process, on the grouped 3x3 and one
1x1 of each ResNeXt-50 stage (batch 16, 224 px), in interleaved rounds. Used
for issue 20 (why folding speeds ResNeXt-50's inference up); results in
docs/cpu.md. A probe, not the benchmark: applications/benchmark.py times models.

    python tools/tf_conv_bn_fusion.py --rounds 7
"""

import argparse
import time

import numpy as np

# (height = width, in-channels, out-channels, kernel size, groups): ResNeXt-50 32x4d.
SHAPES = ((56, 128, 128, 3, 32), (28, 256, 256, 3, 32), (14, 512, 512, 3, 32),
          (7, 1024, 1024, 3, 32), (56, 256, 128, 1, 1), (28, 512, 256, 1, 1),
          (14, 1024, 512, 1, 1), (7, 2048, 1024, 1, 1))


def candidates(shape, rng):
    """``{"BatchNorm": fn, "bias": fn}``: the two fused patterns of one conv shape."""
    import tensorflow as tf

    _, cin, cout, k, groups = shape
    kernel = tf.Variable(rng.normal(0, 0.05, (k, k, cin // groups, cout)).astype("float32"))
    gamma, beta, mean = (tf.Variable(rng.normal(m, 0.1, cout).astype("float32"))
                         for m in (1.0, 0.0, 0.0))
    variance = tf.Variable(rng.uniform(0.5, 1.5, cout).astype("float32"))

    @tf.function
    def batch_norm(x):
        y = tf.nn.convolution(x, kernel, padding="SAME")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            y, gamma, beta, mean=mean, variance=variance, is_training=False)
        return tf.nn.relu(y)

    @tf.function
    def bias(x):
        return tf.nn.relu(tf.nn.bias_add(tf.nn.convolution(x, kernel, padding="SAME"), beta))

    return {"BatchNorm": batch_norm, "bias": bias}


def time_rounds(fns, x, rounds, steps):
    """Median milliseconds per call of each of ``fns``, interleaved round by round."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn(x)
        fn(x)
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn(x)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
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
    for shape in SHAPES:
        size, cin, cout, k, groups = shape
        x = rng.normal(size=(args.batch, size, size, cin)).astype("float32")
        ms = time_rounds(candidates(shape, rng), x, args.rounds, args.steps)
        kind = f"{k}x{k}" + (f", {groups} groups" if groups > 1 else "")
        print(f"| {size}x{size}, {cin}->{cout}, {kind} | {ms['BatchNorm']:.1f} | "
              f"{ms['bias']:.1f} | {ms['BatchNorm'] / ms['bias']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
