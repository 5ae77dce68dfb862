"""Top-1/top-5 of a model and weights on a dataset split, with the weights' transform.

    python training/evaluate.py --model resnext50_32x4d --weights imagenet \
        --dataset imagenet2012 --data-dir ~/tensorflow_datasets
    python training/evaluate.py --model resnext11_4x4d \
        --weights runs/digits_quick-resnext11_4x4d/best.weights.h5 --dataset digits
"""

import argparse
import json
import sys

# Imports only the standard library: TensorFlow starts later, quietly (see cli.py).
from keras_resnext import cli


def run(argv):
    from keras_resnext import files
    from keras_resnext.training import evaluate as evaluate_lib

    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="architecture name")
    parser.add_argument("--weights", required=True,
                        help="'imagenet', a pretrained tag, or a .weights.h5 path")
    parser.add_argument("--dataset", default="imagenet2012",
                        help="digits, a tensorflow-datasets name, or folder:PATH")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    parser.add_argument("--split", default="validation", choices=evaluate_lib.SPLITS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None,
                        help="override the weights' evaluation size")
    parser.add_argument("--crop-pct", type=cli.finite_float, default=None,
                        help="override the weights' center-crop fraction")
    parser.add_argument("--interpolation", default=None,
                        help="override the weights' interpolation")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="evaluate only this many batches")
    parser.add_argument("--output", type=cli.output_file, default=None,
                        help="also write the result as JSON here (its folder must exist)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's logs and the traceback of an error")
    args = parser.parse_args(argv)
    result = evaluate_lib.evaluate(
        args.model, args.weights, args.dataset, data_dir=args.data_dir,
        split=args.split, batch_size=args.batch_size, image_size=args.image_size,
        crop_pct=args.crop_pct, interpolation=args.interpolation,
        max_steps=args.max_steps)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with files.writing("the result", args.output):
            files.atomic_write_text(args.output, text)
    return 0


def main(argv=None):
    return cli.run(run, argv)


if __name__ == "__main__":
    sys.exit(main())
