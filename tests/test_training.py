"""The training program in-process: recipes, schedule, bad input, tfds mock runs."""

import glob
import json
import os
import runpy

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_resnext import families
from keras_resnext.training import evaluate as evaluate_lib
from keras_resnext.training import loop
from keras_resnext.training import optimization
from keras_resnext.training import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = runpy.run_path(os.path.join(ROOT, "training", "fit.py"))
EVALUATE = runpy.run_path(os.path.join(ROOT, "training", "evaluate.py"))


def scalar_events(log_dir):
    """``{tag: [(step, value)]}`` of every scalar in the event files of ``log_dir``."""
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return out


def event_kinds(log_dir):
    tags, graph = set(), False
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            graph = graph or bool(event.graph_def)
            tags.update(v.tag for v in event.summary.value)
    return tags, graph


# What runs here may set the global dtype policy (a recipe's mixed precision): restore it.
pytestmark = pytest.mark.usefixtures("dtype_policy")


def test_recipes_are_printable_and_match_the_paper(capsys):
    for name, recipe in recipes.RECIPES.items():
        assert json.loads(recipe.to_json())["name"] == name
    paper = recipes.get_recipe("imagenet_paper")
    assert (paper.effective_lr, paper.weight_decay, paper.momentum) == (0.1, 1e-4, 0.9)
    assert paper.milestones == (30, 60, 80) and paper.gamma == 0.1  # lr / 10 three times
    assert paper.replace(batch_size=1024).effective_lr == pytest.approx(0.4)
    cifar = recipes.get_recipe("cifar_paper")
    assert (cifar.batch_size, cifar.effective_lr, cifar.weight_decay, cifar.epochs,
            cifar.milestones) == (128, 0.1, 5e-4, 300, (150, 225))
    modern = recipes.get_recipe("imagenet_modern")
    assert (modern.schedule, modern.label_smoothing) == ("cosine", 0.1)
    assert modern.warmup_epochs > 0 and modern.mixup_alpha > 0 and modern.cutmix_alpha > 0

    assert FIT["main"](["--recipe", "cifar_paper", "--print-recipe", "--epochs", "4",
                        "--milestones", "2,3", "--nesterov", "true", "--lr", "0.2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["epochs"], printed["milestones"], printed["nesterov"]) == (4, [2, 3], True)
    assert printed["effective_lr"] == pytest.approx(0.2)
    assert printed["weight_decay"] == 5e-4  # not overridden: the recipe's


def test_learning_rate_schedules():
    step = recipes.get_recipe("imagenet_paper").replace(batch_size=512, warmup_epochs=1)
    lr = optimization.LearningRate.from_recipe(step, steps_per_epoch=10)
    values = [float(lr(s)) for s in (0, 5, 10, 299, 300, 600, 800, 899)]
    np.testing.assert_allclose(values, [0, 0.1, 0.2, 0.2, 0.02, 0.002, 0.0002, 0.0002],
                               rtol=1e-5, atol=1e-9)
    cosine = recipes.get_recipe("digits_quick")
    lr = optimization.LearningRate.from_recipe(cosine, steps_per_epoch=4)
    np.testing.assert_allclose(
        [float(lr(s)) for s in (2, 4, 22, 40)], [0.05, 0.1, 0.05, 0.0], atol=1e-6)


def test_weight_decay_skips_norm_and_bias_unless_asked():
    recipe = recipes.get_recipe("digits_quick")
    model = loop.build_model(recipe, num_classes=10, image_size=32)
    split = loop.split_decay(model, recipe)
    assert all(v.path.endswith("kernel") for v in split["decayed"])
    assert {v.path.split("/")[-1] for v in split["excluded"]} == {"gamma", "beta", "bias"}
    assert "predictions/kernel" in [v.path for v in split["decayed"]]
    everything = loop.split_decay(model, recipe.replace(decay_norm_and_bias=True))
    assert len(everything["decayed"]) == len(model.trainable_variables)


def test_bad_input_is_refused_before_training(tmp_path, capsys):
    def refused(*argv):
        """The one stderr line (without ``error: ``) of a run refused with exit code 2."""
        code = FIT["main"](list(argv) + ["--model-dir", str(tmp_path / "run")])
        out, err = capsys.readouterr()
        assert code == 2, (argv, code, err)
        assert out == "" and "Traceback" not in err, (argv, err)
        assert err.startswith("error: ") and err.endswith("\n"), (argv, err)
        assert err.count("\n") == 1, (argv, err)  # one line
        return err[len("error: "):-1]

    def accepted(line, prefix):
        assert line.startswith(prefix), line
        return line[len(prefix):].split(", ")

    line = refused("--strategy", "nccl")
    names = accepted(line, "Unknown strategy. Received: strategy='nccl'. Accepted: ")
    assert {"mirrored", "multi_worker_mirrored", "tpu", "one_device", "default"} == set(names)
    line = refused("--recipe", "fast")
    names = accepted(line, "Unknown recipe. Received: recipe='fast'. Known recipes: ")
    assert names == sorted(names)
    assert {"imagenet_paper", "cifar_paper", "imagenet_modern", "digits_quick"} <= set(names)
    line = refused("--model", "resnext9000")
    names = accepted(line, "Unknown model. Received: model='resnext9000'. Known models: ")
    assert {"resnext50_32x4d", "resnext29_8x64d", "resnest50d", "res2next50",
            "rexnet_100", "resnext11_4x4d"} <= set(names)  # the recipe's model too
    line = refused("--dataset", "no_such_dataset", "--strategy", "default")
    assert line.startswith("Unknown dataset. Received: dataset='no_such_dataset'. "
                           "Accepted: digits (embedded), folder:PATH, "), line
    data_dir = str(tmp_path / "tfds")
    line = refused("--dataset", "imagenet2012", "--data-dir", data_dir,
                   "--strategy", "default")
    assert line.startswith(f"Dataset 'imagenet2012' is not prepared in "
                           f"data_dir={data_dir!r}"), line
    assert os.path.join(data_dir, "downloads", "manual") in line
    line = refused("--strategy", "tpu")
    assert line.startswith("strategy='tpu' needs the TPU address: --tpu "), line
    assert line.endswith("Received: tpu=None"), line
    assert not os.path.exists(tmp_path / "run")

    # A model_dir holding another model's run: refused, nothing rewritten.
    run_dir = tmp_path / "other"
    os.makedirs(run_dir)
    stored = {"model": "resnext50_32x4d", "dataset": "digits", "num_classes": 10,
              "image_size": 32, "batch_size": 64, "steps_per_epoch": 22}
    (run_dir / "run.json").write_text(json.dumps(stored))
    code = FIT["main"](["--model-dir", str(run_dir), "--strategy", "default"])
    assert code == 2
    assert "holds a run of model 'resnext50_32x4d'" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text()) == stored
    assert sorted(os.listdir(run_dir)) == ["run.json"]


def test_float16_uses_loss_scaling_and_trains_on_cpu(tmp_path):
    recipe = recipes.get_recipe("digits_quick")
    model = loop.build_model(recipe, num_classes=10, image_size=32)
    optimizer = loop.make_optimizer(recipe, 10, loop.split_decay(model, recipe),
                                    "mixed_float16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(loop.make_optimizer(recipe, 10, loop.split_decay(model, recipe),
                                              "mixed_bfloat16"),
                          keras.optimizers.LossScaleOptimizer)
    # GroupConv2D runs block-diagonal plain convolutions where TensorFlow has no
    # float16 grouped gradient (CPUs), so float16 training runs anywhere.
    options = loop.RunOptions(model_dir=str(tmp_path / "run"), strategy="default",
                              mixed_precision="mixed_float16", steps_per_epoch=2,
                              checkpoint_steps=100, verbose=0)
    result = loop.fit(recipe.replace(epochs=1, batch_size=16), options)
    assert result["trained_steps"] == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert np.isfinite(history[-1]["loss"])


@pytest.mark.parametrize("model", ["resnest14d", "res2next50", "rexnet_100"])
def test_every_family_trains_under_mirrored_strategy(model, tmp_path):
    """One step of each family through the real loop (2 replicas, sync BN)."""
    recipe = recipes.get_recipe("digits_quick").replace(
        model=model, epochs=1, batch_size=8, image_size=32)
    options = loop.RunOptions(model_dir=str(tmp_path / "run"), strategy="mirrored",
                              steps_per_epoch=1, val_steps=1, checkpoint_steps=100,
                              verbose=0, sync_bn=True)
    result = loop.fit(recipe, options)
    assert result["trained_steps"] == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert np.isfinite(history[-1]["loss"])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"] == model


def test_build_model_loads_weights_and_fine_tunes_a_new_head(tmp_path, monkeypatch):
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    from keras_resnext import Spec

    with open(os.path.join(fixtures, "resnext_tiny.json")) as f:
        config = json.load(f)
    spec = Spec.from_config(config)
    # Registered as a recipe model, as the families' RECIPE_VARIANTS are.
    monkeypatch.setitem(families.registry(recipes=True), "tiny_fixture",
                        families.ModelEntry("tiny_fixture", families.family_of(spec), spec,
                                            None, recipe=True))
    recipe = recipes.get_recipe("digits_quick").replace(model="tiny_fixture")
    weights = os.path.join(fixtures, "resnext_tiny.safetensors")
    full = loop.build_model(recipe, num_classes=config["num_classes"], image_size=64,
                            weights=weights)
    tuned = loop.build_model(recipe, num_classes=3, image_size=48, weights=weights)
    scratch = loop.build_model(recipe, num_classes=3, image_size=48)
    body = [w.path for w in full.weights if not w.path.startswith("predictions")]
    full_w = {w.path: w.numpy() for w in full.weights}
    tuned_w = {w.path: w.numpy() for w in tuned.weights}
    scratch_w = {w.path: w.numpy() for w in scratch.weights}
    assert len(body) > 20
    for path in body:
        np.testing.assert_array_equal(tuned_w[path], full_w[path], err_msg=path)
    assert not np.array_equal(tuned_w["conv1_conv/kernel"], scratch_w["conv1_conv/kernel"])
    assert tuned.output.shape == (None, 3)

    h5 = str(tmp_path / "tuned.weights.h5")
    tuned.save_weights(h5)
    again = loop.build_model(recipe, num_classes=3, image_size=48, weights=h5)
    for w in again.weights:
        np.testing.assert_array_equal(w.numpy(), tuned_w[w.path])


def _check_run(model_dir, epochs, expected_steps):
    history = json.loads(open(os.path.join(model_dir, "history.json")).read())
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert history[-1]["global_step"] == expected_steps
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    assert state.model_checkpoint_path.endswith(f"ckpt-{expected_steps}")
    train = scalar_events(os.path.join(model_dir, "logs", "train"))
    val = scalar_events(os.path.join(model_dir, "logs", "validation"))
    assert {"loss", "top1", "top5", "learning_rate", "images_per_sec"} <= set(train)
    assert {"loss", "top1", "top5"} <= set(val)
    assert [s for s, _ in val["top1"]] == [h["global_step"] for h in history]
    np.testing.assert_allclose([v for _, v in val["top1"]], [h["val_top1"] for h in history],
                               rtol=1e-6)
    assert all(np.isfinite(v) and v > 0 for _, v in train["loss"])
    tags, graph = event_kinds(os.path.join(model_dir, "logs", "train"))
    assert "augmented_training_images" in tags and graph
    for name in ("best.weights.h5", "last.weights.h5", "learning_curves.png", "run.json"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0
    return history


def test_imagenet2012_mock_modern_recipe_run(tmp_path):
    # Train at 32 px, evaluate/export at 40 px; MixUp, CutMix, RandAugment,
    # label smoothing, warmup + cosine: every moving part of imagenet_modern.
    recipe = recipes.get_recipe("imagenet_modern").replace(
        model="resnext11_4x4d", image_size=32, eval_size=40, batch_size=4, lr_batch=4,
        lr=0.01, epochs=2, warmup_epochs=0.5)
    options = loop.RunOptions(model_dir=str(tmp_path / "run"), strategy="mirrored",
                              steps_per_epoch=3, val_steps=2, checkpoint_steps=2,
                              log_steps=2, verbose=0)
    with tfds.testing.mock_data(num_examples=16):
        result = loop.fit(recipe, options)
    history = _check_run(options.model_dir, 2, 6)
    assert history[-1]["val_examples"] == 8  # val_steps=2 batches of 4
    assert result["trained_steps"] == 6 and result["resumed_from"] is None
    assert result["export"].endswith(os.path.join("resnext11_4x4d", "1"))
    loaded = tf.saved_model.load(result["export"])
    images = tf.random.uniform((2, 40, 40, 3), 0, 255)
    probs = loaded.signatures["serving_default"](images=images)["probabilities"]
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, atol=1e-4)


def test_cifar10_mock_paper_recipe_mixed_bfloat16(tmp_path):
    recipe = recipes.get_recipe("cifar_paper").replace(
        model="resnext11_4x4d", batch_size=8, epochs=2, milestones=(1,))
    options = loop.RunOptions(model_dir=str(tmp_path / "run"), strategy="one_device",
                              mixed_precision="mixed_bfloat16", steps_per_epoch=2,
                              checkpoint_steps=100, profile_steps=(1, 2), verbose=0)
    with tfds.testing.mock_data(num_examples=20):
        result = loop.fit(recipe, options)
        history = _check_run(options.model_dir, 2, 4)
        assert history[0]["val_examples"] == 20  # the whole (mock) test split
        lr = dict(scalar_events(os.path.join(options.model_dir, "logs", "train"))
                  ["learning_rate"])
        assert lr[2] == pytest.approx(0.1 * 8 / 128) and lr[4] == pytest.approx(0.1 * 8 / 1280)
        assert glob.glob(os.path.join(options.model_dir, "logs", "plugins", "profile",
                                      "*", "*.xplane.pb"))
        # Rerunning a finished run trains nothing and rewrites nothing.
        before = {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
                  for d, _, files in os.walk(options.model_dir) for f in files}
        again = loop.fit(recipe, options)
    assert again["trained_steps"] == 0 and again["resumed_from"] == (2, 4)
    after = {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
             for d, _, files in os.walk(options.model_dir) for f in files}
    assert after == before
    assert again["export"] == result["export"]


def test_folder_dataset_run_counts_corrupt_images(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("ant", "bee"):
            os.makedirs(tmp_path / "data" / split / cls)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.jpg")
    (tmp_path / "data" / "train" / "bee" / "3x.jpg").write_bytes(b"\xff\xd8\xff broken")
    (tmp_path / "data" / "val" / "ant" / "0x.png").write_bytes(b"\x89PNG broken")
    recipe = recipes.get_recipe("imagenet_paper").replace(
        model="resnext11_4x4d", dataset=f"folder:{tmp_path / 'data'}", image_size=32,
        batch_size=4, epochs=1, milestones=(1,))
    result = loop.fit(recipe, loop.RunOptions(model_dir=str(tmp_path / "run"),
                                              strategy="default", export=False, verbose=0))
    entry = result["history"][0]
    assert entry["val_examples"] == 4 and entry["global_step"] == 3  # 13 files // 4
    assert entry["corrupt_images_skipped"] >= 1
    assert f"{entry['corrupt_images_skipped']} corrupt images skipped" in capsys.readouterr().out


def test_evaluate_uses_the_weights_transform(tmp_path, capsys):
    resolved = evaluate_lib.resolve_transform("resnext50_32x4d", "imagenet")
    from keras_resnext import pretrained

    entry = pretrained.get_pretrained("resnext50_32x4d", "imagenet")
    transform = resolved.transform
    assert (transform.size, transform.crop_pct, transform.interpolation, transform.mean,
            transform.std) == (entry.test_input_size, entry.test_crop_pct,
                               entry.interpolation, tuple(entry.mean), tuple(entry.std))
    assert resolved.num_classes == 1000

    model = loop.build_model(recipes.get_recipe("digits_quick"), num_classes=10,
                             image_size=32)
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    assert EVALUATE["main"](["--model", "resnext11_4x4d", "--weights", path,
                             "--dataset", "digits", "--batch-size", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 360 and 0 <= result["top1"] <= result["top5"] <= 1
    # The same numbers straight from the model on the same images.
    from keras_resnext.training import data

    (_, _), (x_val, y_val) = data.load_digits()
    from keras_resnext import preprocessing

    probs = model.predict(preprocessing.preprocess_input(x_val), verbose=0)
    assert result["top1"] == pytest.approx(np.mean(probs.argmax(-1) == y_val), abs=1e-9)
    with pytest.raises(ValueError, match="classify 1000 classes"):
        evaluate_lib.evaluate("resnext50_32x4d", "imagenet", "digits")
    with pytest.raises(ValueError, match=r"weights=.*no\.weights\.h5 \(no such file\)"):
        evaluate_lib.evaluate("resnext11_4x4d", str(tmp_path / "no.weights.h5"), "digits")


def _quick_run(model_dir, checkpoint_steps=2, **overrides):
    recipe = recipes.get_recipe("digits_quick").replace(epochs=2, **overrides)
    options = loop.RunOptions(model_dir=str(model_dir), strategy="default",
                              steps_per_epoch=4, checkpoint_steps=checkpoint_steps,
                              val_steps=1, export=False, verbose=0)
    return loop.fit(recipe, options)


def _snapshot(model_dir):
    return {os.path.relpath(os.path.join(d, f), model_dir):
            open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(model_dir) for f in names}


def test_damaged_or_unlisted_checkpoints_resume_never_restart(tmp_path, caplog):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    first = _quick_run(run_dir)
    assert first["trained_steps"] == 8
    assert loop.find_checkpoints(str(checkpoints)) == [
        str(checkpoints / f"ckpt-{n}") for n in (8, 6, 4)]
    history = json.loads((run_dir / "history.json").read_text())

    # The newest checkpoint's data file truncated: named, moved aside (not
    # deleted, not overwritten), and the run resumes from the newest intact one.
    data = checkpoints / "ckpt-8.data-00000-of-00001"
    damaged = data.read_bytes()[:1000]
    data.write_bytes(damaged)
    with caplog.at_level("WARNING", logger="keras_resnext.training"):
        again = _quick_run(run_dir)
    assert "ckpt-8 is damaged" in caplog.text and "Read less bytes" in caplog.text
    assert again["resumed_from"] == (1, 6) and again["trained_steps"] == 2
    assert (checkpoints / "damaged" / "ckpt-8.data-00000-of-00001").read_bytes() == damaged
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-8")
    assert [h["epoch"] for h in json.loads((run_dir / "history.json").read_text())] == [0, 1]
    assert json.loads((run_dir / "history.json").read_text())[0] == history[0]

    # The state file deleted: the newest ckpt-N on disk is found again; the
    # finished run is not retrained and nothing else is rewritten.
    (checkpoints / "checkpoint").unlink()
    before = _snapshot(run_dir)
    caplog.clear()
    with caplog.at_level("WARNING", logger="keras_resnext.training"):
        third = _quick_run(run_dir)
    assert "checkpoint is missing" in caplog.text and "ckpt-8" in caplog.text
    assert third["resumed_from"] == (2, 8) and third["trained_steps"] == 0
    after = _snapshot(run_dir)
    assert after.pop(os.path.join("checkpoints", "checkpoint"))  # written again
    assert after == before

    # No checkpoint left at all, but the run's results are there: refused.
    for path in glob.glob(str(checkpoints / "ckpt-*")):
        os.remove(path)
    before = _snapshot(run_dir)
    with pytest.raises(ValueError, match="holds a run .*history.json.* cannot be resumed"):
        _quick_run(run_dir)
    assert _snapshot(run_dir) == before


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="`lr` must be a finite number"):
        recipes.get_recipe("digits_quick").replace(lr=float("inf"))
    with pytest.raises(FloatingPointError, match=r"diverged at global step \d+ .*loss is "
                                                 r"nan.*the last checkpoint, ckpt-\d+, is kept"):
        _quick_run(run_dir, checkpoint_steps=1, lr=1e30, warmup_epochs=0)
    saved = loop.find_checkpoints(str(run_dir / "checkpoints"))
    assert saved and not glob.glob(str(run_dir / "*.weights.h5"))
    reader = tf.train.load_checkpoint(saved[0])
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
