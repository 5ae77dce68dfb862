"""Training ResNeXt under any tf.distribute strategy (``training/fit.py``).

Modules: ``recipes`` (named, printable configurations), ``data`` (tf.data input
pipelines with the paper's transforms), ``strategies`` (strategies by name),
``loop`` (the custom training loop, ``fit``) and its parts ``models``, ``steps``,
``optimization`` (learning-rate schedule, optimizer), ``checkpoints``, ``run_dir``
(the run directory's files) and ``reporting`` (progress, TensorBoard, profiler);
``run_control`` (the run directory's lock; SIGTERM/SIGINT as a stop request) and
``evaluate`` (top-1/top-5 with the evaluation transform of the weights).
"""

from keras_resnext.training.loop import RunOptions
from keras_resnext.training.loop import fit
from keras_resnext.training.recipes import RECIPES
from keras_resnext.training.recipes import Recipe
from keras_resnext.training.recipes import get_recipe
from keras_resnext.training.run_control import TrainingStopped

__all__ = ["RECIPES", "Recipe", "RunOptions", "TrainingStopped", "fit", "get_recipe"]
