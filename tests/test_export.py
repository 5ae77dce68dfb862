"""Export: SavedModel for TF Serving, TFLite variants, ONNX; verification and bad input."""

import importlib.util
import json
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnext
from keras_resnext import export as export_lib
from keras_resnext import preprocessing
from keras_resnext.export import pipeline as pipeline_lib
from keras_resnext.export import saved_model as saved_model_lib

from helpers import FIXTURES, TINY_SPEC, random_images, randomize_batch_norms

SIZE = 32
CLASS_NAMES = [f"digit {i}" for i in range(10)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_model(seed=0, classes=10, activation="softmax"):
    keras.utils.set_random_seed(seed)
    model = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=classes,
                                classifier_activation=activation)
    # Non-trivial BN statistics, so the in-graph inference path is exercised.
    randomize_batch_norms(model, seed)
    return model


def _keras_probs(model, images):
    return np.asarray(model(preprocessing.preprocess_input(images), training=False))


def _staging_left(out_dir):
    return [n for n in os.listdir(out_dir) if n.startswith(".export-")]


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_model()


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    path = export_lib.export_saved_model(tiny_model, out, model_name="tiny",
                                         class_names=CLASS_NAMES, top_k=3)
    return out, path


def test_saved_model_layout_and_models_config(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    out, path = exported
    assert path == os.path.join(os.fspath(out), "tiny", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isfile(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    assert _staging_left(out) == []
    with open(os.path.join(out, "models.config"), encoding="utf-8") as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "tiny", os.path.join(os.path.abspath(out), "tiny"), "tensorflow")
    assert export_lib.find_xla_functions(path) == []


def test_saved_model_stores_each_weight_once(exported, tiny_model):
    # keras-team/keras#23553: ExportArchive.track(model) saves every weight twice.
    _, path = exported
    shapes = tf.train.load_checkpoint(
        os.path.join(path, "variables", "variables")).get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for key, shape in shapes.items()
                 if key != "_CHECKPOINTABLE_OBJECT_GRAPH")
    # Of the model written: BatchNorm folded into the convolutions' biases.
    assert stored == keras_resnext.fold_batch_norm(tiny_model).count_params()


def test_saved_model_in_fresh_process_matches_keras(exported, tiny_model):
    _, path = exported
    images = random_images(4, SIZE, seed=1)
    # Encoded images of other sizes: decode + resize + center crop in the graph.
    raw = [random_images(1, 1, seed=s)[0] for s in (2, 3)]
    raw = [np.asarray(tf.image.resize(r[None], shape)[0]).round().astype("uint8")
           for r, shape in zip(raw, [(50, 40), (37, 64)])]
    encoded = [tf.io.encode_png(raw[0]).numpy(), tf.io.encode_jpeg(raw[1]).numpy()]
    out = export_lib.run_saved_model_in_subprocess(path, images, encoded)

    expected = _keras_probs(tiny_model, images)
    assert np.max(np.abs(out["images/probabilities"] - expected)) <= 1e-5
    assert expected.max() - expected.min() > 0.05  # not a flat output
    order = np.argsort(-expected, axis=1)[:, :3]
    np.testing.assert_array_equal(out["images/top_k_indices"], order)
    np.testing.assert_allclose(out["images/top_k_scores"],
                               np.take_along_axis(expected, order, 1), atol=1e-5)
    assert [n.decode() for n in out["images/top_k_class_names"][0]] == [
        CLASS_NAMES[i] for i in order[0]]

    decoded = [tf.io.decode_image(e, channels=3) for e in encoded]
    transformed = np.stack([preprocessing.eval_transform(d, size=SIZE) for d in decoded])
    expected_bytes = _keras_probs(tiny_model, transformed)
    assert np.max(np.abs(out["bytes/probabilities"] - expected_bytes)) <= 1e-5


def test_saved_model_cli_show_and_run(exported, tmp_path):
    _, path = exported
    proc = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    text = proc.stdout
    for expected in ("signature_def['serving_default']", "signature_def['serve_image_bytes']",
                     "inputs['images']", "inputs['image_bytes']", "DT_STRING",
                     "shape: unknown_rank", "outputs['probabilities']",
                     "outputs['top_k_class_names']", "outputs['top_k_indices']",
                     "outputs['top_k_scores']"):
        assert expected in text, expected
    np.save(tmp_path / "x.npy", random_images(2, SIZE, seed=9))
    proc = subprocess.run(
        ["saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert "Result for output key probabilities" in proc.stdout
    assert "Result for output key top_k_class_names" in proc.stdout


def test_warmup_requests_are_valid_predict_requests(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    records = list(tf.data.TFRecordDataset(
        os.path.join(path, "assets.extra", "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 2
    loaded = tf.saved_model.load(path)
    seen = []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        probs = signature(**inputs)["probabilities"].numpy()
        assert probs.shape == (1, 10)
        np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
        seen.append((request.model_spec.signature_name, *request.inputs))
    assert seen == [("serving_default", "images"), ("serve_image_bytes", "image_bytes")]


def test_xla_check_catches_keras_grouped_conv(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 1)(inputs)
    x = keras.layers.Conv2D(8, 3, groups=4, padding="same")(x)  # jit_compile=True inside
    x = keras.layers.GlobalAveragePooling2D()(x)
    bad = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ValueError, match="XLA-must-compile.*_XlaMustCompile"):
        export_lib.export_saved_model(bad, tmp_path, model_name="bad")
    assert os.listdir(tmp_path) == []  # no version dir, no staging, no config

    # The same check on a raw SavedModel of it finds the jit function.
    raw = tmp_path / "raw"
    archive = keras.export.ExportArchive()
    archive.track(bad)
    archive.add_endpoint("serve", bad.call,
                         input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    archive.write_out(os.fspath(raw), verbose=False)
    assert any("_XlaMustCompile" in hit for hit in export_lib.find_xla_functions(raw))


def test_interrupted_export_leaves_no_version_dir(tiny_model, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing warmup records")

    monkeypatch.setattr(saved_model_lib, "_write_warmup", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export_saved_model(tiny_model, tmp_path, model_name="tiny")
    assert os.listdir(tmp_path) == []


def test_interrupted_multi_format_export_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    def failing_onnx(*args, **kwargs):
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(pipeline_lib, "convert_onnx", failing_onnx)
    with pytest.raises(RuntimeError, match="conversion crashed"):
        export_lib.export(tiny_model, tmp_path, model_name="tiny",
                          formats=("saved_model", "tflite", "onnx"),
                          tflite_quantizations=("float32",), latency_runs=1,
                          verify_in_subprocess=False)
    # The SavedModel and the .tflite were complete in staging, yet none moved.
    assert os.listdir(tmp_path) == []


def test_overwrite(tmp_path):
    first = _tiny_model(seed=0)
    second = _tiny_model(seed=5)
    images = random_images(2, SIZE, seed=7)
    path = export_lib.export_saved_model(first, tmp_path, model_name="m")
    with pytest.raises(ValueError, match="Version 1 of 'm' already exists.*overwrite"):
        export_lib.export_saved_model(second, tmp_path, model_name="m")
    export_lib.export_saved_model(second, tmp_path, model_name="m", overwrite=True)
    got = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, _keras_probs(second, images), atol=1e-5)
    assert np.max(np.abs(got - _keras_probs(first, images))) > 1e-3
    assert sorted(os.listdir(tmp_path)) == ["m", "models.config"]


def test_logits_model_and_default_class_names(tmp_path):
    model = _tiny_model(classes=4, activation=None)
    path = export_lib.export_saved_model(model, tmp_path, model_name="logits", top_k=10)
    images = random_images(2, SIZE, seed=3)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    expected = tf.nn.softmax(model(preprocessing.preprocess_input(images))).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    assert out["top_k_indices"].shape == (2, 4)  # top_k capped at the class count
    assert set(out["top_k_class_names"].numpy()[0]) == {b"class_0", b"class_1", b"class_2",
                                                        b"class_3"}


def test_weights_entry_preprocessing_is_in_the_graph(tiny_model, tmp_path):
    import dataclasses

    from keras_resnext import pretrained

    entry = dataclasses.replace(
        pretrained.get_pretrained("resnext50_32x4d", "tv2_in1k"), test_input_size=SIZE,
        test_crop_pct=0.5, interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    path = export_lib.export_saved_model(tiny_model, tmp_path, model_name="m",
                                         weights_entry=entry)
    loaded = tf.saved_model.load(path)
    images = random_images(2, SIZE, seed=11)
    expected = np.asarray(tiny_model(preprocessing.preprocess_input(
        images, mean=entry.mean, std=entry.std)))
    assert np.max(np.abs(expected - _keras_probs(tiny_model, images))) > 1e-3
    got = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)
    # Bytes: resize the short side to 64 (= 32 / 0.5), bicubic, center crop 32.
    raw = random_images(1, 48, seed=12)[0].astype("uint8")
    got = loaded.signatures["serve_image_bytes"](
        image_bytes=tf.constant([tf.io.encode_png(raw).numpy()]))
    crop = preprocessing.eval_transform(raw, size=SIZE, crop_pct=0.5, interpolation="bicubic")
    expected = np.asarray(tiny_model(preprocessing.preprocess_input(
        np.asarray(crop)[None], mean=entry.mean, std=entry.std)))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)


def test_export_by_name_loads_a_weights_file(tmp_path):
    spec = TINY_SPEC
    keras.utils.set_random_seed(3)
    trained = keras_resnext.build(spec, input_shape=(SIZE, SIZE, 3), classes=10)
    trained.save_weights(tmp_path / "m.weights.h5")
    report = export_lib.export_by_name(
        spec=spec, model_name="m", weights=os.fspath(tmp_path / "m.weights.h5"),
        input_size=SIZE, classes=10, out_dir=tmp_path / "out", formats=("saved_model",),
        latency_runs=1, verify_in_subprocess=False)
    assert [row["ok"] for row in report["artifacts"] if "ok" in row] == [True]
    images = random_images(2, SIZE, seed=13)
    got = tf.saved_model.load(os.fspath(tmp_path / "out" / "m" / "1")).signatures[
        "serving_default"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, _keras_probs(trained, images), atol=1e-5)


def test_weights_entry_for_tags_files_and_overrides(tmp_path):
    from keras_resnext import pretrained

    default = pretrained.get_pretrained("resnext50_32x4d", "imagenet")
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"not read")
    assert export_lib.weights_entry_for("resnext50_32x4d", "imagenet") == default
    assert export_lib.weights_entry_for("resnext50_32x4d", "tv_in1k").tag == "tv_in1k"
    assert export_lib.weights_entry_for("resnext50_32x4d", local) is None
    assert export_lib.weights_entry_for(None, None) is None
    # A downloaded copy of a tag's file keeps the tag's preprocessing.
    entry = export_lib.weights_entry_for("resnext50_32x4d", local,
                                         preprocessing_tag="imagenet")
    assert entry == default and entry.test_crop_pct != preprocessing.DEFAULT_CROP_PCT
    with pytest.raises(ValueError, match="Unknown pretrained tag"):
        export_lib.weights_entry_for("resnext50_32x4d", None, preprocessing_tag="nope")
    with pytest.raises(ValueError, match="needs a registered architecture"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  preprocessing_tag="imagenet")
    assert not (tmp_path / "o").exists()


def test_mixed_precision_model_exports_in_float32(tmp_path, dtype_policy):
    dtype_policy("mixed_float16")
    mixed = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=10)
    dtype_policy("float32")  # only the model is mixed; the export runs as usual
    float32 = export_lib.float32_model(mixed)
    assert {layer.dtype_policy.compute_dtype for layer in float32.layers} == {"float32"}
    assert export_lib.float32_model(float32) is float32
    images = random_images(3, SIZE, seed=14)
    # Without the copy, TFLite conversion fails on float16 Conv2D.
    report = export_lib.export(mixed, tmp_path, model_name="mixed",
                               formats=("saved_model", "tflite", "onnx"),
                               tflite_quantizations=("float32",), validation_images=images,
                               latency_runs=1, verify_in_subprocess=False)
    rows = {row["format"]: row for row in report["artifacts"]}
    assert report["model_compute_dtypes"] == ["float16", "float32"]
    assert all(row["ok"] for row in rows.values() if "ok" in row)
    assert rows["onnx"]["grouped_conv_nodes"] == 2
    got = tf.saved_model.load(os.fspath(tmp_path / "mixed" / "1")).signatures[
        "serving_default"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, _keras_probs(float32, images), atol=1e-5)
    # float16 compute of the original is close, not equal.
    np.testing.assert_allclose(got, np.asarray(_keras_probs(mixed, images), "float32"),
                               atol=5e-3)


def test_eval_transform_follows_weights_entry(tiny_model):
    from keras_resnext import pretrained

    entry = pretrained.get_pretrained("resnext50_32x4d", "tv2_in1k")
    assert (entry.test_input_size, entry.input_size) == (224, 176)
    assert (entry.test_crop_pct, entry.crop_pct) == (0.965, 0.875)
    at_test = pretrained.eval_transform(entry, entry.test_input_size)
    at_train = pretrained.eval_transform(entry, entry.input_size)
    assert (at_test.size, at_test.crop_pct) == (224, 0.965)
    assert (at_train.size, at_train.crop_pct) == (176, 0.875)
    assert at_test.mean == preprocessing.IMAGENET_MEAN
    # No entry: timm's defaults at the model's own input size.
    assert export_lib.eval_transform_for(tiny_model) == preprocessing.EvalTransform(
        SIZE, 0.875, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert export_lib.eval_transform_for(tiny_model, entry).crop_pct == 0.875  # not 224
    assert export_lib.resolve_class_names(1000)[0] == preprocessing.imagenet_classes()[0][1]


# ---------------------------------------------------------------------------
# Bad input: clear errors, and nothing is written.


def _image_folder(path, n=3, size=20):
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    for i in range(n):
        Image.fromarray(random_images(1, size, seed=i)[0].astype("uint8")).save(
            os.path.join(path, f"{i}.png"))
    return path


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(formats=("saved_model", "pb")), ValueError, r"Unknown export format.*'pb'"),
    (dict(formats=("tflite",), tflite_quantizations=("int4",)), ValueError,
     r"Unknown TFLite quantization.*'int4'.*float32"),
    (dict(formats=("tflite",), tflite_quantizations=()), ValueError, "at least one"),
    (dict(version=0), ValueError, "`version` must be a positive integer"),
    (dict(model_name="a/b"), ValueError, "`model_name`"),
    (dict(onnx_opset=13), ValueError, "`onnx_opset` must be an integer >= 17"),
])
def test_bad_request(kwargs, error, match, tmp_path):
    args = dict(model_name="m", formats=("saved_model",))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        export_lib.validate_request(tmp_path / "out", **args)
    assert os.listdir(tmp_path) == []


def test_single_format_string_is_one_format(tmp_path):
    export_lib.validate_request(tmp_path, model_name="m", formats="tflite",
                                tflite_quantizations="int8")
    with pytest.raises(ValueError, match=r"Unknown export format.*\['tf'\]"):
        export_lib.validate_request(tmp_path, model_name="m", formats=["tf"])


def test_out_path_is_a_file(tiny_model, tmp_path):
    path = tmp_path / "out"
    path.write_text("x")
    with pytest.raises(ValueError, match="output path is a file"):
        export_lib.export_saved_model(tiny_model, path, model_name="m")


def test_existing_version_refused_before_work(tiny_model, tmp_path):
    (tmp_path / "m" / "3").mkdir(parents=True)
    with pytest.raises(ValueError, match="Version 3 of 'm' already exists"):
        export_lib.export(tiny_model, tmp_path, model_name="m", version=3)
    (tmp_path / "m-4.float16.tflite").write_bytes(b"")
    with pytest.raises(ValueError, match="Version 4 of 'm' already exists"):
        export_lib.export(tiny_model, tmp_path, model_name="m", version=4,
                          formats=("tflite",), tflite_quantizations=("float16",))
    assert sorted(os.listdir(tmp_path)) == ["m", "m-4.float16.tflite"]


def test_input_too_small_and_bad_models(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    small = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="Input size too small.*16x16.*32x32"):
        export_lib.export_saved_model(small, tmp_path, model_name="m")
    with pytest.raises(ValueError, match="static square input"):
        export_lib.export_saved_model(
            keras_resnext.build(TINY_SPEC, include_top=False, pooling="avg",
                                input_shape=(None, None, 3)), tmp_path, model_name="m")
    with pytest.raises(ValueError, match="Input size too small.*input_size=16"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", input_size=16,
                                  out_dir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_calibration_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no image file"):
        export_lib.list_images(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        export_lib.list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a folder"):
        export_lib.list_images(empty / "notes.txt")
    corrupt = _image_folder(tmp_path / "corrupt", n=2)
    (corrupt / "2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"Cannot decode calibration image .*2\.jpg"):
        export_lib.load_images(corrupt, preprocessing.EvalTransform(SIZE))
    # The CLI path checks folders and int8 needs before building anything.
    with pytest.raises(ValueError, match="holds no image file"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  formats=("tflite",), tflite_quantizations=("int8",),
                                  calibration_dir=empty)
    with pytest.raises(ValueError, match="'int8' .* needs calibration images"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  formats=("tflite",), tflite_quantizations=("int8",))
    with pytest.raises(ValueError, match="'name:split'"):
        export_lib.export_by_name(spec=TINY_SPEC, model_name="m", out_dir=tmp_path / "o",
                                  calibration_tfds="imagenet2012")
    assert not (tmp_path / "o").exists()


def test_load_images_applies_eval_transform(tmp_path):
    folder = _image_folder(tmp_path / "imgs", n=3, size=20)
    config = preprocessing.EvalTransform(SIZE, crop_pct=0.8, interpolation="bicubic")
    images = export_lib.load_images(folder, config, limit=2)
    assert images.shape == (2, SIZE, SIZE, 3)
    first = tf.io.decode_png(open(folder / "0.png", "rb").read(), channels=3)
    np.testing.assert_array_equal(
        images[0], preprocessing.eval_transform(first, size=SIZE, crop_pct=0.8,
                                                interpolation="bicubic"))


def test_tfds_calibration_source():
    import tensorflow_datasets as tfds

    config = preprocessing.EvalTransform(SIZE)
    with tfds.testing.mock_data(num_examples=6):
        images = export_lib.load_tfds_images("cifar10", "train", config, limit=4)
    assert images.shape == (4, SIZE, SIZE, 3)
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 255
    assert images.std() > 10  # real (mock) pixels, not a constant


# ---------------------------------------------------------------------------
# All formats on a ResNeXt trained on real images (sklearn digits).


def _digits_folders(root):
    """sklearn's 8x8 digits as PNG files: 1000 train, 297 held out."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = {}
    for split, indices in (("train", range(0, 1000)), ("val", range(1500, 1797))):
        os.makedirs(root / split)
        for i in indices:
            pixels = (digits.images[i] * 255 / 16).round().astype("uint8")
            Image.fromarray(pixels).convert("RGB").save(root / split / f"{i:04d}.png")
        labels[split] = digits.target[list(indices)]
    return labels


@pytest.mark.slow
def test_all_formats_on_trained_digits_model(tmp_path):
    labels = _digits_folders(tmp_path / "digits")
    config = preprocessing.EvalTransform(SIZE)
    train = export_lib.load_images(tmp_path / "digits" / "train", config)
    val = export_lib.load_images(tmp_path / "digits" / "val", config)
    keras.utils.set_random_seed(0)
    model = keras_resnext.build(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=10)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(preprocessing.preprocess_input(train), labels["train"], epochs=5,
              batch_size=50, verbose=0)
    accuracy = np.mean(_keras_probs(model, val).argmax(1) == labels["val"])
    assert accuracy > 0.7  # a trained model, not noise (chance is 0.1); 0.848 seen with oneDNN off

    report = export_lib.export(
        model, tmp_path / "out", model_name="digits", class_names=[str(i) for i in range(10)],
        tflite_quantizations=export_lib.TFLITE_QUANTIZATIONS, calibration_images=train[:100],
        validation_images=val, latency_runs=5,
        data_sources={"calibration": "digits train[:100]", "validation": "digits held out"})
    rows = {row["format"]: row for row in report["artifacts"]}
    print("\nheld-out accuracy", accuracy, "\n" + export_lib.report_markdown(report))
    assert list(rows) == ["keras_eager", "keras_graph", "saved_model", "tflite_float32",
                          "tflite_float16", "tflite_dynamic", "tflite_int8", "onnx"]
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5
    assert rows["saved_model"]["verified_in_subprocess"]
    assert rows["tflite_float32"]["max_abs_diff"] <= 1e-4
    assert rows["tflite_float16"]["max_abs_diff"] <= 1e-2
    assert rows["onnx"]["max_abs_diff"] <= 1e-4
    assert all(row["ok"] for row in rows.values() if "ok" in row)
    # Tiny model: the float32 floor is far below the tolerances.
    assert rows["keras_graph"]["max_abs_diff"] < 1e-6
    assert report["tolerances"] == report["spec_tolerances"]
    # Quantized variants: top-1 agreement with Keras on 297 held-out digits.
    assert rows["tflite_dynamic"]["top1_agreement"] >= 0.97
    assert rows["tflite_int8"]["top1_agreement"] >= 0.97
    assert rows["tflite_int8"]["max_abs_diff"] > 1e-4  # really quantized
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D"} <= set(rows["tflite_int8"]["ops"])

    out = tmp_path / "out"
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=os.fspath(out / "digits-1.int8.tflite"))
    int8_tensors = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
    assert len(int8_tensors) > 20  # weights and activations in int8
    sizes = {f: rows[f]["size_bytes"] for f in rows if not f.startswith("keras")}
    assert sizes["tflite_int8"] < sizes["tflite_float16"] < sizes["tflite_float32"]

    # ONNX: dynamic batch, every grouped 3x3 one Conv node with group=C.
    grouped = [l for l in model.layers if isinstance(l, keras_resnext.GroupConv2D)]
    assert rows["onnx"]["dynamic_batch"]
    assert rows["onnx"]["grouped_conv_nodes"] == len(grouped) == 2
    assert rows["onnx"]["grouped_conv_groups"] == [TINY_SPEC.cardinality]
    onnx_probs = export_lib.onnx_runner(os.fspath(out / "digits-1.onnx"))(val[:3])
    assert onnx_probs.shape == (3, 10)

    with open(out / "export_report.json", encoding="utf-8") as f:
        written = {row["format"]: row for row in json.load(f)["artifacts"]}
    assert written["tflite_int8"]["top1_agreement"] == rows["tflite_int8"]["top1_agreement"]
    table = (out / "export_report.md").read_text()
    assert table.count("\n| ") == 9 and "digits-1.int8.tflite" in table
    assert sorted(n for n in os.listdir(out) if not n.startswith("digits")) == [
        "export_report.json", "export_report.md", "models.config"]


# ---------------------------------------------------------------------------
# The CLI.


def _cli():
    spec = importlib.util.spec_from_file_location(
        "export_cli", os.path.join(REPO, "applications", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_exports_fixture_spec(tmp_path, capsys):
    folder = _image_folder(tmp_path / "cal", n=6, size=40)
    cli = _cli()
    code = cli.main([
        "--spec-json", os.path.join(FIXTURES, "resnext_tiny.json"), "--model-name", "tiny",
        "--classes", "10", "--input-size", "32", "--formats", "saved_model", "tflite",
        "--tflite-quantization", "int8", "--calibration-images", os.fspath(folder),
        "--num-calibration", "4", "--out", os.fspath(tmp_path / "out"),
        "--latency-runs", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| saved_model | tiny/1 |" in printed and "| tflite_int8 |" in printed
    with open(tmp_path / "out" / "export_report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["calibration_images"] == 4 and report["validation_images"] == 2
    assert "held out" in report["data_sources"]["validation"]

    # Same version again: refused, exit code 2, message on stderr.
    code = cli.main(["--spec-json", os.path.join(FIXTURES, "resnext_tiny.json"),
                     "--model-name", "tiny", "--classes", "10", "--input-size", "32",
                     "--formats", "saved_model", "--out", os.fspath(tmp_path / "out")])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--model", "not_a_model", "--out", os.fspath(tmp_path)])


def test_cli_unknown_format_fails_before_work(tmp_path, capsys):
    code = _cli().main(["--model", "resnext50_32x4d", "--formats", "saved_model", "caffe",
                        "--out", os.fspath(tmp_path / "out")])
    assert code == 2
    assert "Unknown export format" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# One full-size ResNeXt-50 (32 groups per grouped conv), at a small input.


@pytest.mark.slow
def test_full_size_resnext50_exports(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_resnext.create_model("resnext50_32x4d", input_shape=(64, 64, 3))
    # Sharpen the random classifier so probabilities are far from uniform
    # (1e-3) and a 1e-5 tolerance on them means something.
    head = model.get_layer("predictions")
    head.kernel.assign(head.kernel * 100.0)
    images = random_images(2, 64, seed=4)
    assert _keras_probs(model, images).max() > 0.05
    report = export_lib.export(model, tmp_path, model_name="resnext50_32x4d",
                               formats=("saved_model", "tflite", "onnx"),
                               tflite_quantizations=("float32",), latency_runs=2,
                               validation_images=images)
    rows = {row["format"]: row for row in report["artifacts"]}
    print("\n" + export_lib.report_markdown(report))
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5
    assert rows["tflite_float32"]["max_abs_diff"] <= 1e-4
    assert rows["onnx"]["max_abs_diff"] <= 1e-4
    assert rows["onnx"]["grouped_conv_nodes"] == 16  # one per block
    assert rows["onnx"]["grouped_conv_groups"] == [32]
    # Weights are stored once: 25.0 M float32 parameters = 100 MB (+ graph), of
    # the model written (BatchNorm folded into the convolutions' biases).
    weights_bytes = 4 * keras_resnext.fold_batch_norm(model).count_params()
    assert weights_bytes < rows["saved_model"]["size_bytes"] < 1.1 * weights_bytes
    assert "top_k_class_names" in tf.saved_model.load(
        os.path.join(tmp_path, "resnext50_32x4d", "1")).signatures[
            "serving_default"].structured_outputs
