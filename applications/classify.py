"""Classify image files with a (pretrained) ResNeXt.

    python applications/classify.py IMAGE... --model resnext50_32x4d \
        --weights imagenet --top 5 [--json]

``--weights`` takes anything ``keras_resnext.weights.load_weights`` accepts
(``imagenet``, a tag, ``hf-hub:<repo>``, a ``.safetensors``/``.weights.h5``
path). The evaluation transform is the weights tag's (timm's test size, crop
and interpolation) unless ``--size``/``--crop-pct``/``--interpolation`` say
otherwise. ``--spec FILE.json`` builds a custom architecture of any family (a
``keras_resnext.families.spec_to_config`` dict, whose ``"family"`` key names
the family, or without it a ResNet ``Spec`` config such as the test fixtures;
its ``num_classes`` and ``input_size`` are the defaults of ``--classes`` and
``--size``). Images are decoded by
``keras_resnext.preprocessing.read_image`` (EXIF orientation applied, 16-bit
greyscale scaled to 8 bits). Unreadable or corrupt images
are reported per file and the others are still classified; the exit code is
1 if any image failed, 2 if the model or weights could not be set up (one line
on stderr; ``--verbose`` adds the traceback and TensorFlow's logs).
"""

import json
import sys

import numpy as np

# Imports only the standard library: TensorFlow starts later, quietly (see cli.py).
from keras_resnext import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", default="resnext50_32x4d",
                        help="registered architecture (default: %(default)s)")
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet, a tag, hf-hub:<repo>, or a weights file")
    parser.add_argument("--spec", help="JSON spec of a custom architecture: any family's "
                        "(a 'family' key), or a ResNet Spec's without that key")
    parser.add_argument("--classes", type=int,
                        help="classifier width (default: the spec's num_classes or 1000)")
    parser.add_argument("--top", type=int, default=5, help="predictions per image")
    parser.add_argument("--size", type=int, help="evaluation size override")
    parser.add_argument("--crop-pct", type=cli.finite_float,
                        help="center-crop fraction override")
    parser.add_argument("--interpolation", help="resize interpolation override")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's logs and the traceback of an error")
    args = parser.parse_args(argv)
    if args.top < 1 or args.batch_size < 1:
        parser.error(f"--top and --batch-size must be >= 1. Received: --top {args.top} "
                     f"--batch-size {args.batch_size}")
    return args


def main(argv=None):
    return cli.run(run, argv)


def run(argv):
    args = parse_args(argv)
    from keras_resnext import classifier as classifier_lib
    from keras_resnext import preprocessing
    from keras_resnext import families

    spec, classes, size = None, args.classes, args.size
    if args.spec:
        config, spec = cli.read_json(args.spec, "--spec", lambda config: (
            config, families.spec_from_config(config, default_family="resnet")))
        classes = classes or config.get("num_classes")
        size = size or config.get("input_size")
    classifier = classifier_lib.build_classifier(
        args.model, args.weights, spec=spec, classes=classes, size=size,
        crop_pct=args.crop_pct, interpolation=args.interpolation)

    results, errors, inputs = [], [], []
    for path in args.images:
        try:
            inputs.append((path, classifier.preprocess(preprocessing.read_image(path))))
        except OSError as e:
            errors.append({"file": path, "error": f"cannot read the file ({e.strerror})"})
        except ValueError as e:
            errors.append({"file": path, "error": str(e)})
    top = min(args.top, len(classifier.labels))
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start:start + args.batch_size]
        probs = classifier.model.predict(np.stack([x for _, x in chunk]), verbose=0)
        for (path, _), p in zip(chunk, probs):
            order = np.argsort(-p, kind="stable")[:top]
            results.append({"file": path, "top": [
                {"rank": r + 1, "index": int(i), "id": classifier.labels[i][0],
                 "label": classifier.labels[i][1], "probability": float(p[i])}
                for r, i in enumerate(order)]})

    if args.json:
        json.dump({"model": args.model, "weights": args.weights,
                   "eval_transform": classifier.transform.to_dict(),
                   "results": results, "errors": errors}, sys.stdout, indent=1)
        print()
    else:
        for result in results:
            print(result["file"])
            print(f"  {'rank':>4}  {'prob':>7}  class")
            for row in result["top"]:
                print(f"  {row['rank']:>4}  {row['probability']:7.4f}  "
                      f"{row['label']} ({row['id']})")
    for error in errors:
        print(f"error: {error['file']}: {error['error']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
