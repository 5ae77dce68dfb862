"""Times every artifact of an export in its runtime: TensorFlow, ONNX Runtime, OpenVINO, LiteRT.

    python applications/export.py --model resnext50_32x4d --formats saved_model tflite onnx \\
        openvino --tflite-quantization float32 float16 dynamic int8 \\
        --calibration-images DIR --out exports/
    python applications/deploy_benchmark.py --export-dir exports/ --batches 1 16 \\
        --rounds 5 --out deploy_benchmark.json

Prints a table (images per second per runtime and batch size, with each
runtime's max abs difference to the first) and writes it with the machine's
description to ``--out``. Run it on a quiet machine: all runtimes share one
process and are interleaved, but other load still skews what each one gets.
"""

import functools
import json
import os
import sys

# Imports only the standard library: TensorFlow starts later, quietly (see cli.py).
from keras_resnext import cli


def run(argv, onednn=None):
    parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_onednn_argument(parser)
    parser.add_argument("--export-dir", required=True,
                        help="output folder of applications/export.py")
    parser.add_argument("--batches", nargs="+", type=cli.positive_int, default=[1, 16])
    parser.add_argument("--rounds", type=cli.positive_int, default=5)
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="threads of ONNX Runtime and LiteRT (default: theirs)")
    parser.add_argument("--timm", default=None, metavar="NAME",
                        help="also time timm's NAME eagerly in PyTorch, the reference "
                             "(e.g. resnext50_32x4d; needs timm, PyTorch and torchvision)")
    parser.add_argument("--weights", "--timm-weights", dest="weights", default=None,
                        metavar="FILE",
                        help="PyTorch-layout .safetensors for --timm and --keras (the file the "
                             "export was made from, so that outputs can be compared; default: "
                             "random)")
    parser.add_argument("--keras", default=None, metavar="NAME",
                        help="also time the registered model NAME in this process, as a "
                             "TensorFlow user calls it (tf.function, as built and with "
                             "BatchNorm folded; predict_on_batch and predict), with "
                             "--weights' file when given")
    parser.add_argument("--out", type=cli.output_file, default=None, help="JSON results")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's logs and the traceback of an error")
    args = parser.parse_args(argv)
    if onednn is not None:
        print(cli.onednn_line(onednn), flush=True)

    import numpy as np

    import keras_resnext
    from keras_resnext import benchmark as benchmark_lib
    from keras_resnext import files
    from keras_resnext.export import deploy
    from keras_resnext.preprocessing import EvalTransform

    if args.timm:
        deploy.require_timm()  # before loading every artifact
    if args.keras and args.keras not in keras_resnext.list_models():
        raise ValueError(f"--keras must be a registered model (keras_resnext.list_models()). "
                         f"Received: {args.keras!r}")
    runs = deploy.runners(args.export_dir, threads=args.threads)  # checks the folder first
    with open(os.path.join(args.export_dir, "export_report.json"), encoding="utf-8") as f:
        transform = EvalTransform(**json.load(f)["eval_transform"])
    size = transform.size
    if args.timm:  # last: the first runner (the SavedModel) is the reference
        runs[f"timm {args.timm} (PyTorch eager)"] = deploy.timm_runner(
            args.timm, transform, weights=args.weights, threads=args.threads)
    if args.keras:
        runs.update(deploy.keras_runners(args.keras, transform, weights=args.weights))
    images = np.random.default_rng(0).uniform(
        0, 255, (max(args.batches), size, size, 3)).astype("float32")
    result = deploy.benchmark(runs, images, batches=tuple(args.batches), rounds=args.rounds)
    result.update(machine=benchmark_lib.machine_description(), onednn=onednn,
                  threads=args.threads, input_size=size, timm=args.timm, keras=args.keras,
                  weights=args.weights)
    print(deploy.markdown(result, args.batches))
    if args.out:
        files.atomic_write_text(args.out, json.dumps(result, indent=1))
    return 0


def main(argv=None):
    onednn = cli.choose_onednn(argv)  # before anything imports TensorFlow
    return cli.run(functools.partial(run, onednn=onednn), argv)


if __name__ == "__main__":
    sys.exit(main())
