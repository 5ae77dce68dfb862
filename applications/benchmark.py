"""Throughput of ResNeXt-50 (GroupConv2D / Keras grouped Conv2D) against ResNet-50.

    python applications/benchmark.py --size 112 --batch 16 --rounds 3 --out docs

Prints a table and writes ``<out>/benchmarks.md`` and ``<out>/benchmarks.json``.
"""

import argparse

from keras_resnext import benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=112, help="input resolution")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--slow-steps", type=int, default=1,
                        help="timed training steps per round for the XLA candidate")
    parser.add_argument("--modes", nargs="+", default=["train", "infer"],
                        choices=["train", "infer"])
    parser.add_argument("--out", default="docs", help="folder for benchmarks.md/json")
    args = parser.parse_args(argv)
    report = benchmark.run(size=args.size, batch=args.batch, rounds=args.rounds,
                           steps=args.steps, slow_steps=args.slow_steps,
                           modes=tuple(args.modes))
    print(benchmark.markdown(report))
    benchmark.write(report, args.out)


if __name__ == "__main__":
    main()
