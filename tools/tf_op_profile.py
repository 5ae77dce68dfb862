"""Where TensorFlow inference time goes, by convolution kind: a per-op trace.

Freezes each model's inference function (variables become constants, so
Grappler sees what a served graph sees), runs it in a ``tf.compat.v1.Session``
with a full trace, and sums the kernels' times by kind: dense 1x1, grouped
kxk, dense kxk (k > 1), and the other ops (adds, ReLUs, pooling...). Used for
issue 20 (why ResNeXt-50 infers at ~0.9x ResNet-50 with oneDNN on); results in
docs/cpu.md. A profiler run, not a benchmark: the trace adds overhead, so the
wall times of benchmark.py are what to quote, and the split is what to read.

    python tools/tf_op_profile.py --models resnet50_keras resnext50_32x4d --batch 16
"""

import argparse
import collections
import time

import numpy as np


def frozen_session(model, batch, size):
    """A session running ``model``'s inference with its variables frozen."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)  # no public equivalent in TF 2.21

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([batch, size, size, 3]))
    graph_def = convert_variables_to_constants_v2(fn).graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=0)
    sess = tf.compat.v1.Session(graph=graph, config=config)
    return sess, graph.get_tensor_by_name(fn.inputs[0].name), graph.get_tensor_by_name(
        fn.outputs[0].name), {n.name: n for n in graph_def.node}


def _source(name, nodes):
    """The node behind ``name``, past Identity nodes (frozen variables read through them)."""
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op == "Identity":
        node = nodes.get(node.input[0].split(":")[0])
    return node


def _kind(op_type, node, nodes):
    """``conv 1x1``, ``conv kxk (kernel in-channels N)`` or the op type.

    Grappler names a fused kernel after the last op it absorbed (a ReLU, a
    BatchNorm, a BiasAdd), so the convolution is found by walking back from
    it. A grouped kernel's in-channels are one group's: ResNeXt-50's 3x3s show
    4-32, ResNet-50's dense 3x3s 64-512.
    """
    short = op_type.replace("_MklNative", "").replace("_Mkl", "")
    if "Conv2D" not in op_type:
        return short
    while node is not None and not node.op.startswith(("Conv2D", "DepthwiseConv2d")):
        node = _source(node.input[0], nodes) if node.input else None
    filt = _source(node.input[1], nodes) if node is not None else None
    if filt is None or "value" not in filt.attr:
        return short
    kh, kw, cin, _ = [d.size for d in filt.attr["value"].tensor.tensor_shape.dim]
    if kh == kw == 1:
        return "conv 1x1"
    return f"conv {kh}x{kw} (kernel in-channels {cin})"


def profile(model, batch, size, repeats=3):
    """Milliseconds per inference step, by op kind (mean of ``repeats`` traces)."""
    import tensorflow as tf

    sess, inp, out, nodes = frozen_session(model, batch, size)
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    for _ in range(2):
        sess.run(out, {inp: x})
    start = time.perf_counter()
    for _ in range(repeats):
        sess.run(out, {inp: x})
    wall = (time.perf_counter() - start) / repeats
    totals = collections.Counter()
    for _ in range(repeats):
        meta = tf.compat.v1.RunMetadata()
        sess.run(out, {inp: x}, run_metadata=meta, options=tf.compat.v1.RunOptions(
            trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
        for dev in meta.step_stats.dev_stats:
            for stat in dev.node_stats:
                if stat.node_name in nodes:
                    op_type = stat.timeline_label.split(" = ")[-1].split("(")[0]
                    totals[_kind(op_type, nodes[stat.node_name], nodes)] += (
                        stat.all_end_rel_micros / 1e3 / repeats)
    return wall * 1e3, dict(totals)


def build(name, size):
    """``name`` as ``--models`` takes it, built as the benchmark builds its candidates."""
    from keras_resnext import benchmark

    if name == "resnet50_keras":
        return benchmark.build_candidate(benchmark.BASELINE, size)
    base = name.removesuffix("_folded")
    return benchmark.build_candidate(
        base if base == name else benchmark.folded_label(base), size)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50_keras", "resnext50_32x4d"],
                   help="'resnet50_keras' (keras.applications), a registered name, or one "
                        "with '_folded' (keras_resnext.fold_batch_norm)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    for name in args.models:
        wall, totals = profile(build(name, args.size), args.batch, args.size)
        print(f"{name}: {wall:.0f} ms per step untraced; traced kernels by kind (ms):")
        for kind, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
            if ms >= 0.5:
                print(f"  {kind:40s} {ms:8.1f}")


if __name__ == "__main__":
    main()
