"""Throughput of ResNeXt-50 (GroupConv2D / Keras grouped Conv2D) against ResNet-50.

    python applications/benchmark.py --size 112 --batch 16 --rounds 3 --out docs

Prints a table and writes ``<out>/benchmarks.md`` and ``<out>/benchmarks.json``.
"""

import functools
import os
import runpy
import sys
import types

# Loaded from its file before the package, whose import starts TensorFlow (see cli.py).
cli = types.SimpleNamespace(**runpy.run_path(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "keras_resnext", "cli.py")))


def run(argv, onednn=None):
    import keras_resnext
    from keras_resnext import benchmark

    parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_onednn_argument(parser)  # read by main() before TensorFlow starts
    parser.add_argument("--size", type=cli.positive_int, default=112, help="input resolution")
    parser.add_argument("--batch", type=cli.positive_int, default=16)
    parser.add_argument("--rounds", type=cli.positive_int, default=3,
                        help="interleaved rounds")
    parser.add_argument("--steps", type=cli.positive_int, default=2,
                        help="timed steps per round")
    parser.add_argument("--slow-steps", type=cli.positive_int, default=1,
                        help="timed training steps per round for the XLA candidate")
    parser.add_argument("--modes", nargs="+", default=["train", "infer"],
                        choices=["train", "infer"])
    parser.add_argument("--models", nargs="*", default=list(benchmark.FAMILY_MODELS),
                        choices=keras_resnext.list_models(), metavar="MODEL",
                        help="registered models measured besides ResNeXt-50 and the "
                             "ResNet-50 baselines (default: one per family)")
    parser.add_argument("--skip-keras-grouped", action="store_true",
                        help="leave out ResNeXt-50 with Keras' own grouped Conv2D "
                             "(its XLA training step takes minutes)")
    parser.add_argument("--out", type=cli.output_dir, default="docs",
                        help="folder for benchmarks.md/json")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's logs and the traceback of an error")
    args = parser.parse_args(argv)
    if onednn is not None:
        print(cli.onednn_line(onednn), flush=True)
    report = benchmark.run(size=args.size, batch=args.batch, rounds=args.rounds,
                           steps=args.steps, slow_steps=args.slow_steps,
                           modes=tuple(args.modes), models=tuple(args.models),
                           keras_grouped=not args.skip_keras_grouped)
    print(benchmark.markdown(report))
    benchmark.write(report, args.out)
    return 0


def main(argv=None):
    onednn = cli.choose_onednn(argv)  # before anything imports TensorFlow
    return cli.run(functools.partial(run, onednn=onednn), argv)


if __name__ == "__main__":
    sys.exit(main())
