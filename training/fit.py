"""Trains a ResNeXt: ``python training/fit.py --strategy mirrored``.

Without arguments it trains the quick ResNeXt of the ``digits_quick`` recipe on
the digits embedded in scikit-learn (no download), logs to TensorBoard, and
exports a SavedModel. See docs/training.md.

SIGTERM or Ctrl-C: the current step finishes, a checkpoint is saved at it, one
line says so and the exit code is 143 (SIGTERM) or 130 (SIGINT); rerunning the
same command resumes at that step. A second run on the same --model-dir is
refused while the first one runs.
"""

import argparse
import functools
import os
import sys

# Imports only the standard library: TensorFlow starts later, quietly (see cli.py).
from keras_resnext import cli


def parse_args(argv):
    from keras_resnext.training import loop
    from keras_resnext.training import recipes
    from keras_resnext.training import strategies

    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=recipes.DEFAULT_RECIPE,
                        help=f"one of {', '.join(sorted(recipes.RECIPES))}")
    parser.add_argument("--print-recipe", action="store_true",
                        help="print the resolved recipe as JSON and exit")
    parser.add_argument("--model-dir", default=None,
                        help="run directory (default: runs/<recipe>-<model>)")
    parser.add_argument("--strategy", default="mirrored",
                        help=f"one of {', '.join(strategies.STRATEGIES)}")
    parser.add_argument("--tpu", default=None, help="TPU address for --strategy tpu")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    parser.add_argument("--sync-bn", action="store_true", help="synchronized BatchNorm")
    parser.add_argument("--mixed-precision", default="float32",
                        help=f"one of {', '.join(loop.MIXED_PRECISION)}")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the step")
    parser.add_argument("--weights", default=None,
                        help="initial weights: a .weights.h5 path or a pretrained tag")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap the steps of an epoch")
    parser.add_argument("--val-steps", type=int, default=None,
                        help="cap the validation steps")
    parser.add_argument("--checkpoint-steps", type=int, default=500,
                        help="checkpoint every N global steps (and every epoch)")
    parser.add_argument("--log-steps", type=int, default=50,
                        help="TensorBoard training scalars every N steps")
    parser.add_argument("--profile-steps", default=None, metavar="FIRST,LAST",
                        help="trace global steps FIRST..LAST with the TF profiler")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel")
    parser.add_argument("--verbose", type=int, nargs="?", const=2, default=1,
                        choices=(0, 1, 2),
                        help="0: no progress bar; 1: progress bar (default); "
                             "--verbose alone or 2: also TensorFlow's logs and tracebacks")
    cli.add_onednn_argument(parser)
    cli.add_override_arguments(
        parser, recipes.recipe_flag_types(),
        "recipe overrides (default: the recipe's value; see --print-recipe)")
    return parser.parse_args(argv)


def run(argv, onednn=None):
    from keras_resnext.training import loop
    from keras_resnext.training import recipes
    from keras_resnext.training import run_control

    args = parse_args(argv)
    recipe = recipes.recipe_from_args(args)
    if args.print_recipe:
        print(recipe.to_json())
        return 0
    profile = None
    if args.profile_steps:
        try:
            first, last = (int(part) for part in args.profile_steps.split(","))
        except ValueError:
            raise ValueError(
                "--profile-steps must be FIRST,LAST (two global steps). "
                f"Received: {args.profile_steps!r}") from None
        profile = (first, last)
    options = loop.RunOptions(
        model_dir=args.model_dir or os.path.join("runs", f"{recipe.name}-{recipe.model}"),
        strategy=args.strategy, tpu=args.tpu, data_dir=args.data_dir,
        sync_bn=args.sync_bn, mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile, weights=args.weights,
        steps_per_epoch=args.steps_per_epoch, val_steps=args.val_steps,
        checkpoint_steps=args.checkpoint_steps, log_steps=args.log_steps,
        profile_steps=profile, export=not args.no_export, verbose=min(args.verbose, 1),
        onednn=onednn)
    try:
        loop.fit(recipe, options)
    except run_control.TrainingStopped as stopped:
        print(stopped, file=sys.stderr, flush=True)
        return stopped.exit_code
    return 0


def main(argv=None):
    onednn = cli.choose_onednn(argv)  # before anything imports TensorFlow
    return cli.run(functools.partial(run, onednn=onednn), argv)


if __name__ == "__main__":
    sys.exit(main())
