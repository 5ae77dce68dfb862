"""EMA of the weights (Keras' optimizer ``use_ema``): what the last epoch keeps."""

import os

import numpy as np
import pytest

from keras_resnext.training import loop
from keras_resnext.training import recipes

# Constant lr, no warmup: the first step is the same in runs of any length.
RECIPE = recipes.get_recipe("digits_quick").replace(
    epochs=1, batch_size=16, schedule="constant", warmup_epochs=0)


def test_the_recipe_turns_on_keras_ema():
    model = loop.build_model(RECIPE, num_classes=10, image_size=32)
    decay = loop.split_decay(model, RECIPE)
    plain = loop.make_optimizer(RECIPE, 10, decay, "float32")
    ema = loop.make_optimizer(RECIPE.replace(ema_momentum=0.9), 10, decay, "float32")
    assert not plain.use_ema
    assert ema.use_ema and ema.ema_momentum == 0.9
    adamw = loop.make_optimizer(RECIPE.replace(optimizer="adamw", ema_momentum=0.5), 10,
                                decay, "float32")
    assert adamw.use_ema and adamw.ema_momentum == 0.5


def trained_weights(recipe, tmp_path, steps_per_epoch):
    options = loop.RunOptions(model_dir=str(tmp_path), strategy="default",
                              steps_per_epoch=steps_per_epoch, checkpoint_steps=100,
                              export=False, verbose=0)
    loop.fit(recipe, options)
    model = loop.build_model(recipe, num_classes=10, image_size=32)
    model.load_weights(os.path.join(tmp_path, loop.LAST_WEIGHTS))
    return [v.numpy() for v in model.trainable_variables]


@pytest.mark.slow
def test_the_last_epoch_keeps_the_average(tmp_path):
    """Keras' EMA starts at the first step's weights; with a momentum of nearly 1
    the average of a 4-step run is those weights, not the 4th step's."""
    first_step = trained_weights(RECIPE, tmp_path / "one", steps_per_epoch=1)
    averaged = trained_weights(RECIPE.replace(epochs=2, ema_momentum=1 - 1e-7),
                               tmp_path / "ema", steps_per_epoch=2)
    for a, b in zip(averaged, first_step):  # the 4th step's differ by up to ~0.2
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
