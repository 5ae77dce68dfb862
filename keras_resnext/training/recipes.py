"""Training recipes: named, printable configurations that any CLI flag overrides.

* ``imagenet_paper``: Xie et al., CVPR 2017, section 4 (after He et al. 2016 and
  fb.resnet.torch): SGD momentum 0.9, lr 0.1 per 256 images, weight decay 1e-4,
  lr divided by 10 three times (epochs 30, 60, 80 of 90), scale/aspect-ratio
  augmentation + flip, 224 px, evaluation on a 224 center crop of the 256 short side.
* ``cifar_paper``: appendix A: batch 128, lr 0.1, weight decay 5e-4, 300 epochs,
  lr / 10 at epochs 150 and 225, pad-4 random crop + flip.
* ``imagenet_modern``: torchvision's 2021 recipe (the one behind the ``tv2_in1k``
  weights): warmup + cosine, label smoothing 0.1, MixUp 0.2 / CutMix 1.0, random
  erasing 0.1, an EMA of the weights, train at 176 px, evaluate at 224 px; with
  RandAugment (magnitude 9) where torchvision used TrivialAugmentWide, which Keras
  does not ship.
* ``digits_quick`` (the default): a small ResNeXt on the UCI handwritten digits
  shipped with scikit-learn; a couple of minutes on a 2-core CPU.
"""

import dataclasses
import json
import math

from keras_resnext import families
from keras_resnext import preprocessing

# The recipes' own models ({name: spec}), registered in ``families`` (each
# family's ``RECIPE_VARIANTS``): ``families.get_spec`` and ``build`` know them.
RECIPE_MODELS = {name: entry.spec for name, entry in families.registry(recipes=True).items()
                 if entry.recipe}

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
AUGMENTATIONS = ("imagenet", "cifar", "digits", "auto")
DEFAULT_RECIPE = "digits_quick"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run's mathematics.

    Attributes:
        name: recipe name.
        model: a registered model name (``families.get_entry``: ``list_models()`` or a
            recipe model, ``RECIPE_MODELS``).
        dataset: ``digits``, a tensorflow-datasets name, or ``folder:PATH``.
        image_size: training input height/width.
        eval_size: validation input height/width (0: same as ``image_size``).
        eval_crop_pct: center-crop fraction of the ImageNet evaluation transform.
        epochs: training epochs.
        batch_size: global batch size (split across replicas).
        optimizer: ``sgd`` or ``adamw``.
        lr: learning rate at ``lr_batch`` images per step.
        lr_batch: reference batch of ``lr`` (linear scaling: the lr used is
            ``lr * batch_size / lr_batch``).
        momentum: SGD momentum (AdamW: beta_1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 weight decay (SGD: coupled, as in the paper; AdamW: decoupled).
        decay_norm_and_bias: also decay BatchNorm parameters and biases.
        schedule: ``step``, ``cosine`` or ``constant``.
        milestones: epochs at which a ``step`` schedule multiplies the lr by ``gamma``.
        gamma: step-schedule factor.
        warmup_epochs: linear warmup from 0 (may be fractional).
        label_smoothing: label smoothing of the cross-entropy.
        mixup_alpha: MixUp alpha (0: off).
        cutmix_alpha: CutMix alpha (0: off); with MixUp, one of the two per batch.
        randaugment: RandAugment magnitude in [0, 10] (0: off).
        random_erasing: probability of erasing a random rectangle of an image
            (0: off).
        ema_momentum: momentum of the exponential moving average of the weights,
            updated every step (Keras' optimizer ``use_ema``; 0: off). The last
            epoch evaluates, saves and exports the average.
        augment: training transform: ``imagenet`` (random-resized-crop + flip),
            ``cifar`` (pad-4 crop + flip), ``digits`` (pad crop, no flip) or ``auto``
            (from the dataset).
        zero_init_last_bn: zero-initialise the last BN of every block.
        seed: seed of shuffling and augmentation.
    """

    name: str
    model: str
    dataset: str
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    lr_batch: int
    weight_decay: float
    eval_size: int = 0
    eval_crop_pct: float = preprocessing.DEFAULT_CROP_PCT
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    decay_norm_and_bias: bool = False
    schedule: str = "step"
    milestones: tuple = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    randaugment: float = 0.0
    random_erasing: float = 0.0
    ema_momentum: float = 0.0
    augment: str = "auto"
    zero_init_last_bn: bool = False
    seed: int = 0

    def __post_init__(self):
        def check(condition, field, accepted):
            if not condition:
                raise ValueError(
                    f"Recipe {self.name!r}: `{field}` must be {accepted}. "
                    f"Received: {field}={getattr(self, field)!r}")

        for field in ("image_size", "epochs", "batch_size", "lr_batch"):
            value = getattr(self, field)
            check(isinstance(value, int) and value > 0, field, "a positive integer")
        for field in dataclasses.fields(self):
            if field.type in (float, "float"):
                value = getattr(self, field.name)
                check(isinstance(value, (int, float)) and math.isfinite(value), field.name,
                      "a finite number")
        check(self.eval_size >= 0, "eval_size", ">= 0")
        check(0 < self.eval_crop_pct <= 1, "eval_crop_pct", "in (0, 1]")
        check(self.lr > 0, "lr", "> 0")
        check(self.weight_decay >= 0, "weight_decay", ">= 0")
        check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        check(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
        check(self.augment in AUGMENTATIONS, "augment", f"one of {AUGMENTATIONS}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        check(self.mixup_alpha >= 0, "mixup_alpha", ">= 0")
        # Keras' CutMix takes its Beta distribution's alpha in [0, 1] only.
        check(0 <= self.cutmix_alpha <= 1, "cutmix_alpha", "in [0, 1]")
        check(0 <= self.randaugment <= 10, "randaugment", "in [0, 10]")
        check(0 <= self.random_erasing <= 1, "random_erasing", "in [0, 1]")
        check(0 <= self.ema_momentum < 1, "ema_momentum", "in [0, 1)")
        check(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
              f"in [0, epochs={self.epochs}]")
        check(all(0 < m <= self.epochs for m in self.milestones), "milestones",
              f"epochs in (0, epochs={self.epochs}]")

    @property
    def effective_lr(self):
        """The peak learning rate after linear scaling to ``batch_size``."""
        return self.lr * self.batch_size / self.lr_batch

    def eval_transform(self):
        """The validation ``EvalTransform``: ``eval_size`` (or ``image_size``) and
        ``eval_crop_pct``, with timm's default interpolation and ImageNet mean/std.
        """
        return preprocessing.EvalTransform(size=self.eval_size or self.image_size,
                                           crop_pct=self.eval_crop_pct)

    def replace(self, **overrides):
        """A copy with ``overrides`` applied (``None`` values are ignored)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"Unknown recipe fields: {sorted(unknown)}. "
                f"Accepted: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        """The recipe as indented JSON (what ``fit.py --print-recipe`` shows)."""
        out = self.to_dict()
        out["effective_lr"] = self.effective_lr
        return json.dumps(out, indent=2)


def torchvision_ema_momentum(decay, every, batch_size, epochs):
    """The per-step EMA momentum equal to torchvision's ``--model-ema-decay``.

    torchvision's reference ``train.py`` updates its EMA every ``every`` steps with
    momentum ``1 - min(1, (1 - decay) * batch_size * every / epochs)`` (its
    "adjust", after pycls); Keras updates at every step, so the equal per-step
    momentum is that value to the power ``1 / every``.
    """
    momentum = 1 - min(1.0, (1 - decay) * batch_size * every / epochs)
    return momentum ** (1 / every)


RECIPES = {
    "imagenet_paper": Recipe(
        name="imagenet_paper", model="resnext50_32x4d", dataset="imagenet2012",
        image_size=224, eval_crop_pct=preprocessing.DEFAULT_CROP_PCT, epochs=90,
        batch_size=256,
        lr=0.1, lr_batch=256, momentum=0.9, weight_decay=1e-4,
        schedule="step", milestones=(30, 60, 80), gamma=0.1, augment="imagenet"),
    "cifar_paper": Recipe(
        name="cifar_paper", model="resnext29_8x64d", dataset="cifar10",
        image_size=32, epochs=300, batch_size=128, lr=0.1, lr_batch=128,
        momentum=0.9, weight_decay=5e-4, schedule="step", milestones=(150, 225),
        gamma=0.1, augment="cifar"),
    "imagenet_modern": Recipe(
        name="imagenet_modern", model="resnext50_32x4d", dataset="imagenet2012",
        image_size=176, eval_size=224, eval_crop_pct=224 / 232, epochs=600,
        batch_size=1024, lr=0.5, lr_batch=1024, momentum=0.9, weight_decay=2e-5,
        schedule="cosine", warmup_epochs=5, label_smoothing=0.1, mixup_alpha=0.2,
        cutmix_alpha=1.0, randaugment=9, random_erasing=0.1, augment="imagenet",
        zero_init_last_bn=True,
        # torchvision's defaults --model-ema-steps 32 --model-ema-decay 0.99998:
        # 0.999966 per step. torchvision also averages the BatchNorm statistics
        # and restarts the average during warmup; Keras averages the trainable
        # weights only, from the first step (warmup's share of the final average
        # is e^-25).
        ema_momentum=torchvision_ema_momentum(0.99998, every=32, batch_size=1024,
                                              epochs=600)),
    "digits_quick": Recipe(
        name="digits_quick", model="resnext11_4x4d", dataset="digits",
        image_size=32, epochs=10, batch_size=64, lr=0.1, lr_batch=64,
        momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
        warmup_epochs=1, augment="digits"),
}


def get_recipe(name):
    """The recipe registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the recipes.
    """
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown recipe. Received: recipe={name!r}. "
            f"Known recipes: {', '.join(sorted(RECIPES))}") from None


def recipe_flag_types():
    """``{field: python type}`` of the recipe fields a CLI may override."""
    types = {}
    for field in dataclasses.fields(Recipe):
        if field.name == "name":
            continue
        types[field.name] = field.type if not isinstance(field.type, str) else {
            "str": str, "int": int, "float": float, "bool": bool,
            "tuple": tuple}[field.type]
    return types


def recipe_from_args(args):
    """The recipe named by ``args.recipe`` with every given flag applied."""
    recipe = get_recipe(args.recipe)
    return recipe.replace(**{name: getattr(args, name)
                             for name in recipe_flag_types()})

