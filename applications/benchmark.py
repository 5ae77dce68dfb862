"""Speed and memory of ResNeXt-50 and its relatives against ResNet-50, on one Keras backend.

    python applications/benchmark.py --backend jax --size 224 --batch 16 --out docs

Prints a table and writes ``<out>/benchmarks_<backend...>.json`` and
``<out>/benchmarks.md`` (every JSON in ``<out>``, one section each).
"""

import functools
import importlib.util
import os
import sys

# keras_resnext (its cli too) is imported in functions: the package checks at import that
# Keras' backend is installed, so --backend must be set first (main).

BACKENDS = ("tensorflow", "jax", "torch")
EXIT_BAD_INPUT = 2  # cli.EXIT_BAD_INPUT, before the package may be imported
# The package each backend needs, and how to install it.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "pip install tensorflow"),
                    "jax": ("jax", "pip install jax"),
                    "torch": ("torch", "pip install torch")}


def backend_from(argv):
    """The ``--backend`` of ``argv`` (None if absent or not one of ``BACKENDS``)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        value = (argv[i + 1] if arg == "--backend" and i + 1 < len(argv)
                 else arg.partition("=")[2] if arg.startswith("--backend=") else None)
        if value is not None:
            return value if value in BACKENDS else None
    return None


def select_backend(backend):
    """Sets ``KERAS_BACKEND`` before Keras is imported; ValueError if it is not installed."""
    module, install = BACKEND_PACKAGES[backend]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"--backend {backend}: {module} is not installed ({install})")
    os.environ["KERAS_BACKEND"] = backend


def parser(models, default_models):
    from keras_resnext import cli

    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=BACKENDS,
                   help="Keras backend (default: KERAS_BACKEND, else Keras' default)")
    cli.add_onednn_argument(p)  # read by main() before TensorFlow starts
    p.add_argument("--size", type=cli.positive_int, default=112, help="input resolution")
    p.add_argument("--batch", type=cli.positive_int, default=16)
    p.add_argument("--rounds", type=cli.positive_int, default=3, help="interleaved rounds")
    p.add_argument("--steps", type=cli.positive_int, default=2, help="timed steps per round")
    p.add_argument("--slow-steps", type=cli.positive_int, default=1,
                   help="timed training steps per round for the Keras grouped-conv candidate")
    p.add_argument("--latency-steps", type=cli.positive_int, default=5,
                   help="timed batch-1 calls per round")
    p.add_argument("--modes", nargs="+", default=["train", "infer", "latency"],
                   choices=["train", "infer", "latency"])
    p.add_argument("--models", nargs="*", default=list(default_models), choices=models,
                   metavar="MODEL",
                   help="registered models measured besides ResNeXt-50 and keras.applications' "
                        "ResNet-50 (default: this package's resnet50 and one per family)")
    p.add_argument("--skip-keras-grouped", action="store_true",
                   help="leave out ResNeXt-50 with Keras' own grouped Conv2D (its training "
                        "step takes minutes: XLA on TensorFlow and JAX)")
    p.add_argument("--folded", action="store_true",
                   help="also time each of our models with BatchNorm folded into its "
                        "convolutions (keras_resnext.fold_batch_norm; inference and batch-1 "
                        "only)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip peak RSS (a child process per model)")
    p.add_argument("--dtype-policy", default="float32", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--out", type=cli.output_dir, default="docs",
                   help="folder for benchmarks.md and the JSON")
    p.add_argument("--verbose", action="store_true",
                   help="show the frameworks' logs and the traceback of an error")
    return p


def run(argv, onednn=None):
    import keras

    import keras_resnext
    from keras_resnext import cli
    from keras_resnext import benchmark

    args = parser(keras_resnext.list_models(), benchmark.DEFAULT_MODELS).parse_args(argv)
    if onednn is not None and keras.backend.backend() == "tensorflow":
        print(cli.onednn_line(onednn), flush=True)
    report = benchmark.run(
        backend=args.backend, size=args.size, batch=args.batch, rounds=args.rounds,
        steps=args.steps, slow_steps=args.slow_steps, latency_steps=args.latency_steps,
        modes=tuple(args.modes), models=tuple(args.models),
        keras_grouped=not args.skip_keras_grouped, folded=args.folded,
        memory=not args.no_memory,
        policy=args.dtype_policy)
    print(benchmark.markdown(report))
    benchmark.write(report, args.out)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    backend = backend_from(argv)
    if backend is not None:
        # Before cli.run: importing TensorFlow imports Keras, which reads KERAS_BACKEND once.
        try:
            select_backend(backend)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from keras_resnext import cli

    onednn = cli.choose_onednn(argv)  # before anything imports TensorFlow
    return cli.run(functools.partial(run, onednn=onednn), argv)


if __name__ == "__main__":
    sys.exit(main())
