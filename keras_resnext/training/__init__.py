"""Training ResNeXt under any tf.distribute strategy (``training/fit.py``).

Modules: ``recipes`` (named, printable configurations), ``data`` (tf.data input
pipelines with the paper's transforms), ``strategies`` (strategies by name),
``loop`` (the custom training loop: checkpoints, TensorBoard, export) and
``evaluate`` (top-1/top-5 with the evaluation transform of the weights).
"""

from keras_resnext.training.loop import RunOptions
from keras_resnext.training.loop import fit
from keras_resnext.training.recipes import RECIPES
from keras_resnext.training.recipes import Recipe
from keras_resnext.training.recipes import get_recipe

__all__ = ["RECIPES", "Recipe", "RunOptions", "fit", "get_recipe"]
