"""Undecodable images are skipped by name: evaluate.py, the training pipeline, fit."""

import json
import logging
import os
import runpy

import numpy as np
import pytest

from keras_resnext.training import data as data_lib
from keras_resnext.training import loop
from keras_resnext.training import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = runpy.run_path(os.path.join(ROOT, "training", "evaluate.py"))


# What runs here may set the global dtype policy (a recipe's mixed precision): restore it.
pytestmark = pytest.mark.usefixtures("dtype_policy")


@pytest.fixture
def folder(tmp_path):
    """train/ and val/ trees of two classes, each with undecodable files.

    ``val/bee/zz.jpg`` is the last file of the split in reading order, so that
    no decodable image follows it.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("ant", "bee"):
            os.makedirs(root / split / cls)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.jpg")
    corrupt = {"train": [root / "train" / "bee" / "2x.jpg"],
               "val": [root / "val" / "ant" / "0x.png", root / "val" / "bee" / "zz.jpg"]}
    for path in corrupt["train"] + corrupt["val"]:
        path.write_bytes(b"\xff\xd8\xff broken" if path.suffix == ".jpg" else b"\x89PNG broken")
    return root, {split: [str(p) for p in paths] for split, paths in corrupt.items()}


def test_evaluate_names_the_files_it_skips_even_the_last_one(folder, tmp_path, capsys,
                                                             caplog):
    root, corrupt = folder
    recipe = recipes.get_recipe("digits_quick")
    model = loop.build_model(recipe, num_classes=2, image_size=32)
    weights = str(tmp_path / "two.weights.h5")
    model.save_weights(weights)
    with caplog.at_level(logging.WARNING, logger="keras_resnext"):
        code = EVALUATE["main"](["--model", "resnext11_4x4d", "--weights", weights,
                                 "--dataset", f"folder:{root}", "--batch-size", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["examples"] == 4  # 6 files, 2 undecodable
    assert result["corrupt_images_skipped"] == 2
    assert result["corrupt_files"] == corrupt["val"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("keras_resnext")] == [
        f"Skipped 2 undecodable image file(s): {', '.join(corrupt['val'])}"]


def test_the_training_pipeline_names_the_files_it_skips(folder):
    root, corrupt = folder
    source = data_lib.get_source(f"folder:{root}")
    recipe = recipes.get_recipe("imagenet_paper").replace(image_size=32, batch_size=3)
    counter = data_lib.CorruptCounter()
    ds = data_lib.train_dataset(source, recipe, counter=counter)
    # Two passes over the 9 files: a decodable image follows every skipped one.
    for _ in ds.take(2 * source.train_size // recipe.batch_size):
        pass
    assert counter.files() == corrupt["train"]
    assert int(counter.skipped) == 1


def test_describe_skipped_names_the_first_few_and_counts_all():
    names = [f"img{i}.jpg" for i in range(data_lib.NAMED_SKIPPED + 3)]
    line = data_lib.describe_skipped(names)
    assert line == (f"Skipped {len(names)} undecodable image file(s): "
                    f"{', '.join(names[:data_lib.NAMED_SKIPPED])} and 3 more")
    assert data_lib.describe_skipped(["a.png"]) == "Skipped 1 undecodable image file(s): a.png"


def test_fit_names_the_validation_files_it_skips(folder, tmp_path, caplog):
    root, corrupt = folder
    recipe = recipes.get_recipe("imagenet_paper").replace(
        model="resnext11_4x4d", dataset=f"folder:{root}", image_size=32,
        batch_size=4, epochs=1, milestones=(1,))
    with caplog.at_level(logging.WARNING, logger="keras_resnext"):
        result = loop.fit(recipe, loop.RunOptions(model_dir=str(tmp_path / "run"),
                                                  strategy="default", export=False,
                                                  verbose=0))
    entry = result["history"][0]
    assert entry["val_examples"] == 4
    named = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(named) == 1
    for path in corrupt["val"]:  # the last file of the split too
        assert path in named[0]
    assert entry["corrupt_images_skipped"] >= 2
