"""Export a model for deployment: SavedModel (TF Serving), TFLite, ONNX, OpenVINO, keras-hub preset.

Every artifact is verified against the Keras model; the numbers go to
``<out>/export_report.json`` and ``export_report.md``. See docs/deploy.md.

    python applications/export.py --model resnext50_32x4d --weights imagenet \\
        --formats saved_model tflite onnx \\
        --tflite-quantization float32 float16 dynamic int8 \\
        --calibration-images DIR --out exports/
"""

import sys

# Imports only the standard library: TensorFlow starts later, quietly (see cli.py).
from keras_resnext import cli


def parse_args(argv=None):
    from keras_resnext import export as export_lib
    from keras_resnext import families

    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=sorted(families.registry(recipes=True)),
                       help="registered architecture")
    which.add_argument("--spec-json",
                       help="a spec as JSON: any family's (families.spec_to_config, with "
                            "a 'family' key) or a ResNet Spec's without that key "
                            "(e.g. tests/fixtures/resnext_tiny.json)")
    p.add_argument("--weights", default=None,
                   help="'imagenet', a pretrained tag, 'hf-hub:<owner>/<repo>[@revision]', "
                        "or a file: Keras .weights.h5/.h5, PyTorch-layout .safetensors, "
                        ".pth/.pt (needs PyTorch) (default: random init)")
    p.add_argument("--preprocessing-tag", default=None,
                   help="pretrained tag whose eval transform and mean/std to bake in "
                        "(default: the tag --weights names; use it with a weights file)")
    p.add_argument("--input-size", type=int, default=None,
                   help="input size (default: the weights' test size or the spec's)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--class-names", default=None,
                   help="text file with one class name per line")
    p.add_argument("--formats", nargs="+", default=list(export_lib.DEFAULT_FORMATS),
                   help=f"any of {export_lib.FORMATS} (default: "
                        f"{' '.join(export_lib.DEFAULT_FORMATS)}; keras_hub: a keras-hub "
                        "preset folder, needs the [hub] extra)")
    p.add_argument("--tflite-quantization", nargs="+",
                   default=list(export_lib.DEFAULT_TFLITE_QUANTIZATIONS),
                   help=f"any of {export_lib.TFLITE_QUANTIZATIONS}")
    p.add_argument("--calibration-images", default=None, help="folder of images")
    p.add_argument("--calibration-tfds", default=None, help="tfds 'name:split'")
    p.add_argument("--num-calibration", type=int, default=100)
    p.add_argument("--validation-images", default=None, help="folder of images")
    p.add_argument("--validation-tfds", default=None, help="tfds 'name:split'")
    p.add_argument("--num-validation", type=int, default=200)
    p.add_argument("--tfds-data-dir", default=None)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model-name", default=None, help="TF Serving name (default: --model)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--overwrite", action="store_true",
                   help="replace this version's artifacts (without it, an existing version, "
                        "or one another export publishes meanwhile, is refused)")
    p.add_argument("--onnx-opset", type=int, default=export_lib.ONNX_MIN_OPSET)
    p.add_argument("--no-fold-batch-norm", dest="fold_batch_norm", action="store_false",
                   help="write the SavedModel and the converted formats with BatchNorm as in "
                        "the Keras model (default: each BatchNorm that only follows a "
                        "convolution is folded into it, a faster graph for TF Serving; "
                        "a keras_hub preset always keeps BatchNorm; docs/deploy.md)")
    p.add_argument("--top-k", type=int, default=export_lib.DEFAULT_TOP_K)
    p.add_argument("--latency-runs", type=int, default=20)
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's logs and the traceback of an error")
    args = p.parse_args(argv)
    if args.spec_json and args.model_name is None:
        p.error("--spec-json needs --model-name")
    return args


def run(argv):
    from keras_resnext import export as export_lib
    from keras_resnext import families

    args = parse_args(argv)
    spec = None
    if args.spec_json:
        spec = cli.read_json(args.spec_json, "--spec-json", lambda config: (
            families.spec_from_config(config, default_family="resnet")))
    class_names = None
    if args.class_names:
        class_names = cli.read_lines(args.class_names, "--class-names")
    report = export_lib.export_by_name(
        args.model, spec=spec, weights=args.weights, input_size=args.input_size,
        classes=args.classes, class_names=class_names, out_dir=args.out,
        model_name=args.model_name, formats=args.formats,
        tflite_quantizations=args.tflite_quantization,
        calibration_dir=args.calibration_images,
        calibration_tfds=args.calibration_tfds, num_calibration=args.num_calibration,
        validation_dir=args.validation_images, validation_tfds=args.validation_tfds,
        num_validation=args.num_validation, tfds_data_dir=args.tfds_data_dir,
        version=args.version, overwrite=args.overwrite,
        preprocessing_tag=args.preprocessing_tag, onnx_opset=args.onnx_opset,
        top_k=args.top_k, latency_runs=args.latency_runs,
        fold_batch_norm=args.fold_batch_norm)
    print(export_lib.report_markdown(report))
    failed = [row["format"] for row in report["artifacts"] if row.get("ok") is False]
    if failed:
        print(f"error: outside tolerance: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    return cli.run(run, argv)


if __name__ == "__main__":
    sys.exit(main())
