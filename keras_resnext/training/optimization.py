"""The optimizer of a recipe: learning-rate schedule, weight decay, EMA, loss scaling.

The schedule is a function of the optimizer's step, so that it is restored
with the optimizer (from a ``tf.train.Checkpoint`` or a ``.keras`` file).
"""

import math

import keras

from keras_resnext.training import recipes as recipes_lib


@keras.saving.register_keras_serializable(package="keras_resnext")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then step decay, cosine decay or constant, per epoch fraction.

    At epoch ``e = step / steps_per_epoch``: ``peak * e / warmup_epochs`` during
    warmup; then ``peak * gamma ** (milestones passed)`` (``"step"``),
    ``peak / 2 * (1 + cos(pi * p))`` with ``p`` the fraction of the epochs after
    warmup (``"cosine"``), or ``peak`` (``"constant"``).

    Args:
        peak_lr: the learning rate after warmup.
        steps_per_epoch: optimizer steps in an epoch.
        schedule: one of ``recipes.SCHEDULES``.
        epochs: training epochs (the end of the cosine).
        warmup_epochs: linear warmup from 0 (may be fractional).
        milestones: epochs at which a ``"step"`` schedule multiplies by ``gamma``.
        gamma: the step schedule's factor.
    """

    def __init__(self, peak_lr, steps_per_epoch, *, schedule, epochs, warmup_epochs=0.0,
                 milestones=(), gamma=0.1):
        if schedule not in recipes_lib.SCHEDULES:
            raise ValueError(f"`schedule` must be one of {recipes_lib.SCHEDULES}. "
                             f"Received: schedule={schedule!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1. "
                             f"Received: steps_per_epoch={steps_per_epoch}")
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.schedule = schedule
        self.epochs = epochs
        self.warmup_epochs = float(warmup_epochs)
        self.milestones = tuple(milestones)
        self.gamma = float(gamma)

    @classmethod
    def from_recipe(cls, recipe, steps_per_epoch):
        """The schedule of ``recipe`` (its peak is the recipe's ``effective_lr``)."""
        return cls(recipe.effective_lr, steps_per_epoch, schedule=recipe.schedule,
                   epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
                   milestones=recipe.milestones, gamma=recipe.gamma)

    def __call__(self, step):
        import tensorflow as tf

        peak, warmup = self.peak_lr, self.warmup_epochs
        epoch = tf.cast(step, tf.float32) / float(self.steps_per_epoch)
        if self.schedule == "step":
            drops = tf.add_n([tf.cast(epoch >= m, tf.float32)
                              for m in self.milestones] or [tf.constant(0.0)])
            lr = peak * tf.pow(self.gamma, drops)
        elif self.schedule == "cosine":
            progress = tf.clip_by_value(
                (epoch - warmup) / max(self.epochs - warmup, 1e-8), 0.0, 1.0)
            lr = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        else:
            lr = tf.constant(peak)
        if warmup > 0:
            lr = tf.where(epoch < warmup, peak * epoch / warmup, lr)
        return lr

    def get_config(self):
        return {"peak_lr": self.peak_lr, "steps_per_epoch": self.steps_per_epoch,
                "schedule": self.schedule, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "milestones": list(self.milestones),
                "gamma": self.gamma}


def split_decay(model, recipe):
    """``{"decayed": [...], "excluded": [...]}``: kernels vs BN parameters and biases."""
    decayed, excluded = [], []
    for variable in model.trainable_variables:
        is_kernel = variable.path.endswith("kernel")
        (decayed if is_kernel or recipe.decay_norm_and_bias else excluded).append(variable)
    return {"decayed": decayed, "excluded": excluded}


def make_optimizer(recipe, steps_per_epoch, decayed, mixed_precision):
    """The recipe's optimizer; weight decay goes through the loss for SGD.

    SGD gets the paper's coupled L2 decay (``0.5 * wd * ||w||^2`` in the loss, the
    gradient ``wd * w`` of PyTorch's ``weight_decay``); AdamW its decoupled decay
    on ``decayed`` variables only.

    Args:
        recipe: the ``Recipe``.
        steps_per_epoch: optimizer steps in an epoch (for the schedule).
        decayed: ``split_decay``'s dict.
        mixed_precision: the policy name; ``"mixed_float16"`` adds loss scaling.

    Returns:
        A Keras optimizer (not built).
    """
    schedule = LearningRate.from_recipe(recipe, steps_per_epoch)
    # Keras keeps the average in the optimizer; ``fit`` swaps it in at the last epoch.
    ema = dict(use_ema=True, ema_momentum=recipe.ema_momentum) if recipe.ema_momentum else {}
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate=schedule, momentum=recipe.momentum, nesterov=recipe.nesterov,
            **ema)
    else:
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=recipe.weight_decay,
            beta_1=recipe.momentum, **ema)
        optimizer.exclude_from_weight_decay(
            var_names=[v.path for v in decayed["excluded"]] or None)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
