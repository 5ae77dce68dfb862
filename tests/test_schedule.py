"""The learning-rate schedule: the recipes' formula at every step, and config round-trips."""

import math
import os

import keras
import numpy as np
import pytest

from keras_resnext.training import optimization
from keras_resnext.training import recipes

# Every schedule kind, with and without warmup, fractional warmup and milestones.
CASES = {
    "imagenet_paper": (recipes.get_recipe("imagenet_paper").replace(
        epochs=9, milestones=(3, 6, 8)), 7),
    "imagenet_paper_warmup": (recipes.get_recipe("imagenet_paper").replace(
        batch_size=512, warmup_epochs=1, epochs=9, milestones=(3, 6, 8)), 10),
    "cifar_paper": (recipes.get_recipe("cifar_paper").replace(epochs=12, milestones=(6, 9)), 3),
    "imagenet_modern": (recipes.get_recipe("imagenet_modern").replace(
        epochs=12, warmup_epochs=2.5), 6),
    "digits_quick": (recipes.get_recipe("digits_quick"), 4),
    "constant_warmup": (recipes.get_recipe("digits_quick").replace(
        schedule="constant", warmup_epochs=0.5), 5),
    "constant": (recipes.get_recipe("digits_quick").replace(
        schedule="constant", warmup_epochs=0), 5),
}


def formula(recipe, steps_per_epoch, step):
    """The recipe's learning rate at ``step``, from its numbers (float64)."""
    peak = recipe.lr * recipe.batch_size / recipe.lr_batch
    epoch = step / steps_per_epoch
    warmup = recipe.warmup_epochs
    if warmup > 0 and epoch < warmup:
        return peak * epoch / warmup
    if recipe.schedule == "step":
        return peak * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        progress = min(max((epoch - warmup) / (recipe.epochs - warmup), 0.0), 1.0)
        return 0.5 * peak * (1 + math.cos(math.pi * progress))
    return peak


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_step_follows_the_recipe(name):
    recipe, steps_per_epoch = CASES[name]
    schedule = optimization.LearningRate.from_recipe(recipe, steps_per_epoch)
    steps = range(recipe.epochs * steps_per_epoch + 2)  # one past the end, too
    expected = [formula(recipe, steps_per_epoch, s) for s in steps]
    # float32 arithmetic in the schedule (cos near the end of a cosine: ~1e-8 of the
    # peak); a step drop is a factor 10 and a warmup step 1/steps of the peak.
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=2e-6,
                               atol=1e-7 * recipe.effective_lr)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trips(name):
    recipe, steps_per_epoch = CASES[name]
    schedule = optimization.LearningRate.from_recipe(recipe, steps_per_epoch)
    config = schedule.get_config()
    assert config["peak_lr"] == recipe.effective_lr and config["schedule"] == recipe.schedule
    again = optimization.LearningRate.from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, optimization.LearningRate)
    assert restored.get_config() == config
    steps = range(0, recipe.epochs * steps_per_epoch + 1, 3)
    np.testing.assert_array_equal(values(again, steps), values(schedule, steps))
    np.testing.assert_array_equal(values(restored, steps), values(schedule, steps))


def test_an_optimizer_in_a_keras_file_reloads_its_schedule(tmp_path):
    recipe, steps_per_epoch = CASES["imagenet_modern"]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    decay = optimization.split_decay(model, recipe)
    model.compile(optimizer=optimization.make_optimizer(recipe, steps_per_epoch, decay,
                                                        "float32"),
                  loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # builds the optimizer: 2 steps
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)

    loaded = keras.saving.load_model(path).optimizer
    stored = loaded.get_config()["learning_rate"]
    assert stored["registered_name"] == "keras_resnext>LearningRate"
    assert stored["config"] == model.optimizer.get_config()["learning_rate"]["config"]
    assert int(loaded.iterations) == 2
    schedule = optimization.LearningRate.from_recipe(recipe, steps_per_epoch)
    for step in range(0, recipe.epochs * steps_per_epoch + 1, 5):
        loaded.iterations.assign(step)  # the optimizer's rate is its schedule's at its step
        assert float(loaded.learning_rate) == float(schedule(step)), step


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match=r"one of .*Received: schedule='linear'"):
        optimization.LearningRate(0.1, 10, schedule="linear", epochs=5)
    with pytest.raises(ValueError, match=r">= 1. Received: steps_per_epoch=0"):
        optimization.LearningRate(0.1, 0, schedule="cosine", epochs=5)
