"""The training program: one custom loop for every tf.distribute strategy.

Keras 3 ``Model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so the step is ``strategy.run`` inside a
``tf.function``: the per-replica loss is ``tf.nn.compute_average_loss`` over the
global batch, and the Keras optimizer all-reduces the gradients itself
(``TFOptimizer._all_reduce_sum_gradients``). Input comes from
``strategy.distribute_datasets_from_function``, one sharded pipeline per worker.

Fault tolerance: a ``tf.train.Checkpoint`` (model, optimizer, global step,
finished epochs, best top-1) is written every ``checkpoint_steps`` steps and at
the end of every epoch; rerunning the same command restores it, skips the
batches of the current epoch already trained on, and stops at once when the
schedule is complete. A damaged checkpoint (truncated or missing data file,
corrupt index) is moved to ``checkpoints/damaged/`` and the next older one is
used; a missing state file (``checkpoints/checkpoint``) is rebuilt from the
``ckpt-N`` files; a run whose files exist but whose checkpoints are all gone
is refused, never silently restarted. A non-finite loss or weights stop the
run before anything else is saved. In a multi-worker job only the chief writes
into ``model_dir``; the other workers write their copies under
``model_dir/workers/<type>-<index>/`` (TensorFlow's documented pattern).

One writer per run: each process locks the directory it writes
(``run_control.RunLock``: the chief ``model_dir``, a worker its own folder),
so a second ``fit`` on the same run is refused; the lock of a process that
died is taken over. SIGTERM and SIGINT stop a run cleanly: the current step
finishes, a checkpoint is saved at it, ``run.json`` says ``"status":
"stopped"`` and ``TrainingStopped`` is raised (``fit.py`` prints its one line
and exits with 143 or 130). Under multi-worker the stop request travels in
every step's all-reduce, so all workers stop after the same step.
"""

import dataclasses
import json
import logging
import math
import os
import re
import time

from keras_resnext import extras
from keras_resnext import files
from keras_resnext import model as model_lib
from keras_resnext import specs as specs_lib
from keras_resnext import weights as weights_lib
from keras_resnext.families import size as size_lib
from keras_resnext.training import data as data_lib
from keras_resnext.training import recipes as recipes_lib
from keras_resnext.training import run_control
from keras_resnext.training import strategies

IMAGENET_CLASSES = 1000
MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "learning_curves.png"
BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EXPORT_DIR = "export"
# Keys of run.json that a rerun in the same model_dir must match.
RUN_IDENTITY = ("model", "dataset", "num_classes", "image_size", "batch_size",
                "steps_per_epoch")

log = logging.getLogger("keras_resnext.training")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How and where to run a recipe (nothing here changes the mathematics).

    Attributes:
        model_dir: checkpoints, logs, weights, history and export go here.
        strategy: one of ``strategies.STRATEGIES``.
        tpu: TPU address for ``strategy="tpu"``.
        data_dir: tensorflow-datasets data directory.
        sync_bn: synchronized BatchNorm across replicas.
        mixed_precision: ``float32``, ``mixed_float16`` (with loss scaling) or
            ``mixed_bfloat16``.
        jit_compile: XLA-compile the per-replica step.
        weights: initial weights (a ``.weights.h5`` path or a pretrained tag).
        steps_per_epoch: cap on the steps of an epoch (default: one pass).
        val_steps: cap on the validation steps (default: the whole split).
        checkpoint_steps: checkpoint every this many global steps (and per epoch).
        log_steps: TensorBoard training scalars every this many steps.
        profile_steps: ``(first, last)`` global steps traced by the TF profiler.
        export: write a SavedModel at the end.
        verbose: progress bar (1) or not (0).
        keep_checkpoints: checkpoints kept on disk.
        onednn: the program's oneDNN choice (``cli.choose_onednn``), for run.json.
    """

    model_dir: str
    strategy: str = "mirrored"
    tpu: str = None
    data_dir: str = None
    sync_bn: bool = False
    mixed_precision: str = "float32"
    jit_compile: bool = False
    weights: str = None
    steps_per_epoch: int = None
    val_steps: int = None
    checkpoint_steps: int = 500
    log_steps: int = 50
    profile_steps: tuple = None
    export: bool = True
    verbose: int = 1
    keep_checkpoints: int = 3
    onednn: dict = None


def known_models():
    """Names ``fit`` accepts for ``recipe.model``."""
    return sorted(specs_lib.VARIANTS) + sorted(recipes_lib.RECIPE_MODELS)


def validate(recipe, options):
    """Cheap checks of everything, before TensorFlow starts.

    Raises:
        ValueError: unknown model, strategy, dataset form or precision; bad options.
        extras.MissingExtraError: the [train] extra is not installed.
    """
    extras.require("train", "Training")
    if recipe.model not in specs_lib.VARIANTS and recipe.model not in recipes_lib.RECIPE_MODELS:
        raise ValueError(
            f"Unknown model. Received: model={recipe.model!r}. "
            f"Known models: {', '.join(known_models())}")
    weights_lib.parse(recipe.model, options.weights)
    strategies.validate_strategy_args(options.strategy, options.tpu)
    data_lib.validate_dataset_name(recipe.dataset)
    if options.mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"Unknown mixed precision policy. Received: "
            f"mixed_precision={options.mixed_precision!r}. Accepted: {MIXED_PRECISION}")
    for name in ("steps_per_epoch", "val_steps"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    for name in ("checkpoint_steps", "log_steps"):
        if getattr(options, name) < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(options, name)}")
    if options.profile_steps is not None:
        first, last = options.profile_steps
        if not 0 <= first < last:
            raise ValueError(
                "`profile_steps` must be two global steps FIRST,LAST with 0 <= FIRST < LAST. "
                f"Received: profile_steps={options.profile_steps}")
    files.check_writable_dir(options.model_dir, name="model_dir")


def build_model(recipe, *, num_classes, image_size, weights=None, sync_bn=False):
    """The classifier of ``recipe`` (registered or recipe-local architecture).

    Built without weights at ``image_size``, then ``weights`` are loaded with
    ``keras_resnext.weights.load_weights``: a ``.weights.h5`` as is; published
    or PyTorch-layout weights (a tag, ``hf-hub:...``, ``.safetensors``) without
    their classifier when ``num_classes`` is not theirs (fine-tuning), and at
    any input size.

    Args:
        recipe: the ``Recipe`` (architecture, zero-init of the last BN).
        num_classes: classifier width.
        image_size: input height/width.
        weights: ``None`` or any ``weights=`` value of ``keras_resnext.build``.
        sync_bn: synchronized BatchNorm.

    Returns:
        A ``keras.Model`` with a softmax classifier named ``predictions``.
    """
    kwargs = dict(weights=None, classes=num_classes,
                  input_shape=(image_size, image_size, 3),
                  zero_init_last_bn=recipe.zero_init_last_bn, synchronized_bn=sync_bn)
    if recipe.model in recipes_lib.RECIPE_MODELS:
        model = model_lib.build(recipes_lib.RECIPE_MODELS[recipe.model], name=recipe.model,
                                **kwargs)
    else:
        model = model_lib.create_model(recipe.model, **kwargs)
    parsed = weights_lib.parse(recipe.model, weights)
    if parsed.kind != "none":
        # A Keras file is this model's own; PyTorch-layout weights may need a new head.
        new_head = (not (parsed.path or "").endswith(".h5") and
                    num_classes != IMAGENET_CLASSES)
        weights_lib.load_weights(model, recipe.model, parsed, skip_head=new_head)
    return model


class LearningRate:
    """Linear warmup, then step decay, cosine decay or constant, per epoch fraction.

    A ``keras.optimizers.schedules.LearningRateSchedule`` (made in ``make``) of
    the optimizer's step, so that it is restored with the optimizer.
    """

    @staticmethod
    def make(recipe, steps_per_epoch):
        import keras
        import tensorflow as tf

        peak = recipe.effective_lr

        class Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                epoch = tf.cast(step, tf.float32) / float(steps_per_epoch)
                warmup = float(recipe.warmup_epochs)
                if recipe.schedule == "step":
                    drops = tf.add_n([tf.cast(epoch >= m, tf.float32)
                                      for m in recipe.milestones] or [tf.constant(0.0)])
                    lr = peak * tf.pow(float(recipe.gamma), drops)
                elif recipe.schedule == "cosine":
                    progress = tf.clip_by_value(
                        (epoch - warmup) / max(recipe.epochs - warmup, 1e-8), 0.0, 1.0)
                    lr = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
                else:
                    lr = tf.constant(peak)
                if warmup > 0:
                    lr = tf.where(epoch < warmup, peak * epoch / warmup, lr)
                return lr

            def get_config(self):
                return {"recipe": recipe.name}

        return Schedule()


def make_optimizer(recipe, steps_per_epoch, decayed, mixed_precision):
    """The recipe's optimizer; weight decay goes through the loss for SGD.

    SGD gets the paper's coupled L2 decay (``0.5 * wd * ||w||^2`` in the loss, the
    gradient ``wd * w`` of PyTorch's ``weight_decay``); AdamW its decoupled decay
    on ``decayed`` variables only.
    """
    import keras

    schedule = LearningRate.make(recipe, steps_per_epoch)
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


def split_decay(model, recipe):
    """``{"decayed": [...], "excluded": [...]}``: kernels vs BN parameters and biases."""
    decayed, excluded = [], []
    for variable in model.trainable_variables:
        is_kernel = variable.path.endswith("kernel")
        (decayed if is_kernel or recipe.decay_norm_and_bias else excluded).append(variable)
    return {"decayed": decayed, "excluded": excluded}


def check_model_dir(model_dir, run_info):
    """Raises ``ValueError`` if ``model_dir`` holds a different run (reads only).

    Returns:
        The stored run description, or ``None`` for a new run.
    """
    path = os.path.join(model_dir, RUN_FILE)
    if not os.path.exists(path):
        if os.path.isdir(os.path.join(model_dir, CHECKPOINT_DIR)):
            raise ValueError(
                f"model_dir={model_dir!r} holds checkpoints but no {RUN_FILE}: it is "
                "not a run of this program. Use another --model-dir.")
        return None
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    different = {k: (stored.get(k), run_info[k]) for k in RUN_IDENTITY
                 if stored.get(k) != run_info[k]}
    if different:
        details = ", ".join(f"{k}: stored {a!r}, requested {b!r}"
                            for k, (a, b) in different.items())
        raise ValueError(
            f"model_dir={model_dir!r} holds a run of model {stored.get('model')!r} on "
            f"{stored.get('dataset')!r} that does not match this command ({details}). "
            "Nothing was changed; use another --model-dir to start a new run.")
    return stored


def find_checkpoints(directory):
    """Prefixes of the ``ckpt-N`` checkpoints in ``directory`` with an index file, newest first."""
    import tensorflow as tf

    found = []
    if tf.io.gfile.isdir(directory):
        for name in tf.io.gfile.listdir(directory):
            match = re.fullmatch(r"ckpt-(\d+)\.index", name)
            if match:
                found.append((int(match.group(1)), os.path.join(directory, name[:-6])))
    return [path for _, path in sorted(found, reverse=True)]


def restore_checkpoint(checkpoint, model_dir, *, chief=True):
    """Restores the newest intact checkpoint of the run in ``model_dir``.

    The state file (``checkpoints/checkpoint``) names the newest checkpoint;
    if it is missing, the newest ``ckpt-N`` on disk is used (and the chief
    writes the state file again). A checkpoint that cannot be read is
    reported and, by the chief, moved to ``checkpoints/damaged/`` (nothing is
    deleted or overwritten); the next older one is tried.

    Args:
        checkpoint: the ``tf.train.Checkpoint`` of this run's objects.
        model_dir: the run directory.
        chief: whether this worker may change files in ``model_dir``.

    Returns:
        The checkpoint prefix restored, or ``None`` for a new run.

    Raises:
        ValueError: the run has results (history, weights) but no readable
            checkpoint, or a checkpoint does not match this model.
    """
    import tensorflow as tf

    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    on_disk = find_checkpoints(directory)
    state = tf.train.get_checkpoint_state(directory)
    recovered = state is None or not state.model_checkpoint_path
    if not recovered:
        latest = os.path.join(directory, os.path.basename(state.model_checkpoint_path))
        number = _checkpoint_number(latest)
        candidates = [latest] + [p for p in on_disk if _checkpoint_number(p) < number]
    else:
        candidates = on_disk
        if on_disk:
            log.warning("%s is missing: resuming from the newest checkpoint on disk, %s.",
                        os.path.join(directory, "checkpoint"), os.path.basename(on_disk[0]))
    damaged = []
    for path in candidates:
        try:
            status = checkpoint.restore(path)
        except (IndexError, OSError, tf.errors.OpError) as e:
            reason = str(getattr(e, "message", "") or e).strip().splitlines()[0]
            damaged.append(os.path.basename(path))
            if chief:
                _quarantine(path)
            log.warning("Checkpoint %s is damaged (%s)%s; trying the next older one.",
                        path, reason,
                        f", moved to {os.path.join(directory, 'damaged')}" if chief else "")
            continue
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise ValueError(
                f"Checkpoint {path} does not match this model and optimizer ({e}). "
                "Nothing was changed; use another --model-dir.") from None
        if chief and (recovered or damaged):
            older = [p for p in find_checkpoints(directory)
                     if _checkpoint_number(p) < _checkpoint_number(path)]
            with files.writing("the checkpoint state file", directory):
                tf.compat.v1.train.update_checkpoint_state(  # relative names, as the manager's
                    directory, os.path.basename(path),
                    all_model_checkpoint_paths=[os.path.basename(p)
                                                for p in [*reversed(older), path]])
        return path
    results = [name for name in (HISTORY_FILE, BEST_WEIGHTS, LAST_WEIGHTS)
               if os.path.exists(os.path.join(model_dir, name))]
    if damaged or results:
        what = (f"its checkpoints are damaged ({', '.join(damaged)})" if damaged
                else f"no checkpoint is left in {directory}")
        raise ValueError(
            f"model_dir={model_dir!r} holds a run ({', '.join(results) or 'checkpoints'}) "
            f"but {what}, so it cannot be resumed. Nothing else was changed; use "
            "another --model-dir, or delete this one to start over.")
    return None


def _checkpoint_number(prefix):
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def _quarantine(prefix):
    """Moves the files of checkpoint ``prefix`` to ``damaged/`` beside it."""
    import tensorflow as tf

    directory, name = os.path.split(prefix)
    target = os.path.join(directory, "damaged")
    tf.io.gfile.makedirs(target)
    for entry in tf.io.gfile.listdir(directory):
        if entry.startswith(name + "."):
            tf.io.gfile.rename(os.path.join(directory, entry), os.path.join(target, entry),
                               overwrite=True)


def save_checkpoint(manager, step):
    """``manager.save(step)``; on failure, removes what the save left and raises ``OSError``."""
    import tensorflow as tf

    name = f"ckpt-{step}"
    try:
        with files.writing(f"checkpoint {name}", manager.directory):
            return manager.save(checkpoint_number=step)
    except OSError:
        state = tf.train.get_checkpoint_state(manager.directory)
        registered = state is not None and os.path.basename(
            state.model_checkpoint_path) == name
        for entry in tf.io.gfile.listdir(manager.directory):
            path = os.path.join(manager.directory, entry.rstrip("/"))
            if entry.startswith(name + "_temp") or (
                    entry.startswith(name + ".") and not registered):
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
        raise


def check_finite(model, step, epoch, manager, *, loss=None):
    """Raises ``FloatingPointError`` if ``loss`` or a weight of ``model`` is not finite."""
    import tensorflow as tf

    if loss is not None:
        what = None if math.isfinite(loss) else f"the training loss is {loss}"
    else:
        bad = [v.path for v in model.trainable_variables
               if not bool(tf.reduce_all(tf.math.is_finite(v)))]
        what = f"non-finite weights ({', '.join(bad[:3])})" if bad else None
    if what:
        kept = manager.latest_checkpoint
        raise FloatingPointError(
            f"Training diverged at global step {step} (epoch {epoch + 1}): {what}. "
            "Stopped without saving; " + (
                "no checkpoint was written yet" if kept is None else
                f"the last checkpoint, {os.path.basename(kept)}, is kept and a rerun "
                "resumes from it") + ". Lower the learning rate (--lr) or add warmup "
            "(--warmup-epochs).")


def plot_curves(history, path):
    """Writes the loss and top-1 learning curves (train and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "top1", "top-1 accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-", label="train")
        ax.plot(epochs, [h["val_" + key] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        with files.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)


def export_model(model, model_dir, model_name, class_names=None):
    """TF Serving SavedModel (``export/<model_name>/1``) via ``keras_resnext.export``.

    Preprocessing and top-k are in the graph; weights are stored once (Keras'
    own ``model.export`` stores them twice).

    Returns:
        The SavedModel directory.
    """
    from keras_resnext.export import export_saved_model

    kwargs = {"class_names": list(class_names)} if class_names else {}
    return export_saved_model(model, os.path.join(model_dir, EXPORT_DIR),
                              model_name=model_name, version=1, overwrite=True,
                              **kwargs)


def _find_export(model_dir):
    root = os.path.join(model_dir, EXPORT_DIR)
    for dirpath, _, names in os.walk(root):
        if "saved_model.pb" in names:
            return dirpath
    return None


def fit(recipe, options):
    """Trains ``recipe`` with ``options``; resumes from ``options.model_dir``.

    Args:
        recipe: a ``recipes.Recipe``.
        options: a ``RunOptions``.

    Returns:
        A dict: ``history`` (one dict per epoch), ``resumed_from`` (``(epoch,
        step)`` or ``None``), ``trained_steps`` (steps run by this call),
        ``export`` (SavedModel path or ``None``), ``model_dir``.

    Raises:
        ValueError: bad arguments, a batch size not divisible by the replicas, or
            a ``model_dir`` holding another run; raised before training starts.
        FileNotFoundError: the dataset is not prepared (message says how).
        FileExistsError: another live process writes the same directory.
        run_control.TrainingStopped: SIGTERM or SIGINT (here or on another
            worker) stopped the run after the current step, whose checkpoint
            is saved; rerunning resumes there.
    """
    validate(recipe, options)
    strategy = strategies.make_strategy(options.strategy, tpu=options.tpu)

    import keras

    strategies.check_batch_size(recipe.batch_size, strategy)
    source = data_lib.get_source(recipe.dataset, options.data_dir)
    steps_per_epoch = source.train_size // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"The training split has {source.train_size} examples, fewer than one "
            f"global batch. Received: batch_size={recipe.batch_size}")
    if options.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, options.steps_per_epoch)
    eval_transform = recipe.eval_transform()
    eval_size = eval_transform.size
    run_info = {
        "model": recipe.model, "dataset": recipe.dataset,
        "num_classes": source.num_classes, "image_size": recipe.image_size,
        "eval_size": eval_size, "eval_crop_pct": recipe.eval_crop_pct,
        "batch_size": recipe.batch_size, "steps_per_epoch": steps_per_epoch,
        "recipe": recipe.to_dict(), "strategy": options.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "mixed_precision": options.mixed_precision, "onednn": options.onednn,
    }
    model_dir = options.model_dir
    check_model_dir(model_dir, run_info)
    if options.onednn is not None:
        from keras_resnext import cli

        # Once the run is accepted: a refused run prints its one error line only.
        print(cli.onednn_line(options.onednn), flush=True)

    chief = strategies.is_chief(strategy)
    task_type, task_id = strategies.task_identity(strategy)
    write_dir = model_dir if chief else os.path.join(
        model_dir, "workers", f"{task_type}-{task_id}")

    keras.mixed_precision.set_global_policy(options.mixed_precision)
    check_memory(recipe, strategy, source.num_classes)
    # Each process locks the folder it writes: the chief model_dir, a worker its own.
    with run_control.RunLock(write_dir), run_control.StopSignals() as signals:
        return _train(recipe, options, strategy=strategy, source=source,
                      run_info=run_info, steps_per_epoch=steps_per_epoch,
                      eval_transform=eval_transform, chief=chief, write_dir=write_dir,
                      signals=signals)


def check_memory(recipe, strategy, num_classes):
    """Refuses a model whose training step cannot fit in this machine's memory.

    On CPUs (the host's memory holds everything) the estimate of
    ``families.size`` at the batch of this worker; on accelerators only
    ``keras_resnext.build``'s check of the weights.

    Raises:
        ValueError: one line naming the estimate, before anything is built.
    """
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return
    spec = recipes_lib.RECIPE_MODELS.get(recipe.model) or specs_lib.get_spec(recipe.model)
    size_lib.check(spec, input_shape=(recipe.image_size, recipe.image_size, 3),
                   classes=num_classes, training=True,
                   batch=recipe.batch_size // strategies.num_workers(strategy))


def _train(recipe, options, *, strategy, source, run_info, steps_per_epoch,
           eval_transform, chief, write_dir, signals):
    """``fit`` once the run directory is locked: build, restore, train, export."""
    import keras
    import tensorflow as tf

    model_dir = options.model_dir
    eval_size = eval_transform.size
    keras.utils.set_random_seed(recipe.seed)  # same initial weights for a given seed
    with strategy.scope():
        model = build_model(recipe, num_classes=source.num_classes,
                            image_size=recipe.image_size, weights=options.weights,
                            sync_bn=options.sync_bn)
        eval_model = model if eval_size == recipe.image_size else build_model(
            recipe, num_classes=source.num_classes, image_size=eval_size)
        decay = split_decay(model, recipe)
        optimizer = make_optimizer(recipe, steps_per_epoch, decay,
                                   options.mixed_precision)
        optimizer.build(model.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    best_top1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_top1")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=global_step,
                                     epoch=epochs_done, best_top1=best_top1)
    # The inputs are good (the model is built, the weights loaded): from here on
    # files are written.
    latest = restore_checkpoint(checkpoint, model_dir, chief=chief)
    with files.writing("the run directory", write_dir):
        os.makedirs(write_dir, exist_ok=True)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_dir, CHECKPOINT_DIR),
        max_to_keep=options.keep_checkpoints, checkpoint_name="ckpt")
    resumed_from = None
    history = []
    if latest:
        resumed_from = (int(epochs_done.numpy()), int(global_step.numpy()))
        history_path = os.path.join(model_dir, HISTORY_FILE)
        if os.path.exists(history_path):
            with open(history_path, encoding="utf-8") as f:
                history = [h for h in json.load(f) if h["epoch"] < resumed_from[0]]
        log.info("Resuming from %s: %d finished epochs, global step %d.",
                 latest, *resumed_from)
        print(f"Resuming from {latest}: epoch {resumed_from[0] + 1}/{recipe.epochs}, "
              f"global step {resumed_from[1]}", flush=True)

    start_epoch = int(epochs_done.numpy())
    result = {"history": history, "resumed_from": resumed_from, "trained_steps": 0,
              "export": None, "model_dir": model_dir}
    if start_epoch >= recipe.epochs:
        print(f"The run in {model_dir} already finished its {recipe.epochs} epochs; "
              "nothing to train.", flush=True)
        if chief and options.export and _find_export(model_dir) is None:
            _sync_eval_model(model, eval_model)
            result["export"] = export_model(eval_model, model_dir, recipe.model,
                                        source.class_names)
        else:
            result["export"] = _find_export(model_dir)
        return result

    if chief:
        write_run_state(model_dir, run_info, status="training")

    train_step, eval_step = make_steps(
        strategy, model, eval_model, optimizer, recipe, decayed=decay["decayed"],
        num_classes=source.num_classes, jit_compile=options.jit_compile)

    train_counter = data_lib.CorruptCounter()
    val_counter = data_lib.CorruptCounter()
    reported_corrupt = set()

    def train_input(epoch, skip_steps):
        def dataset_fn(context):
            # Each global step takes one per-replica batch per local replica.
            replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
            return data_lib.train_dataset(source, recipe, input_context=context,
                                          epoch=epoch, skip_batches=skip_steps * replicas_here,
                                          counter=train_counter)
        return strategy.distribute_datasets_from_function(dataset_fn)

    num_pipelines = strategies.num_workers(strategy)
    full_val_steps = data_lib.eval_steps(source, recipe.batch_size,
                                         strategy.num_replicas_in_sync, num_pipelines)
    val_steps = min(full_val_steps, options.val_steps or full_val_steps)

    def val_input():
        def dataset_fn(context):
            return data_lib.eval_dataset(
                source, batch_size=recipe.batch_size, transform=eval_transform,
                input_context=context, steps=val_steps, counter=val_counter)
        return strategy.distribute_datasets_from_function(dataset_fn)

    logs_dir = os.path.join(model_dir, LOG_DIR)
    if chief:
        with files.writing("TensorBoard logs", logs_dir):
            train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
            val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))
        with files.writing("TensorBoard logs", logs_dir), train_writer.as_default(
                step=int(global_step.numpy())):
            sample = next(iter(data_lib.train_dataset(source, recipe, epoch=start_epoch)))
            tf.summary.image("augmented_training_images",
                             data_lib.augmented_grid(sample[0]), max_outputs=1)
            forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(
                tf.TensorSpec([1, recipe.image_size, recipe.image_size, 3], tf.float32))
            tf.summary.graph(forward.graph)
    else:
        train_writer = val_writer = tf.summary.create_noop_writer()

    step = int(global_step.numpy())
    profiling = False
    stop = False
    stopped = dict(signals=signals, epochs=recipe.epochs, manager=manager,
                   run_info=run_info, model_dir=model_dir, chief=chief,
                   writers=(train_writer, val_writer))
    for epoch in range(start_epoch, recipe.epochs):
        first = step - epoch * steps_per_epoch
        iterator = iter(train_input(epoch, first))
        progbar = keras.utils.Progbar(
            steps_per_epoch, verbose=options.verbose if chief else 0,
            stateful_metrics=["loss", "top1", "top5", "lr"])
        if chief and options.verbose:
            print(f"Epoch {epoch + 1}/{recipe.epochs}", flush=True)
        if first:
            progbar.update(first)
        epoch_sums = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
        window = dict(epoch_sums)
        window_start, epoch_start = time.perf_counter(), time.perf_counter()
        window_steps = 0
        for step_in_epoch in range(first, steps_per_epoch):
            if chief and options.profile_steps and step == options.profile_steps[0]:
                tf.profiler.experimental.start(logs_dir)
                profiling = True
            lr = float(optimizer.learning_rate)  # the rate this step uses
            requested = tf.constant(0.0 if signals.received is None else 1.0)
            sums = {k: float(v) for k, v in train_step(iterator, requested).items()}
            stop = sums.pop("stop") > 0  # this process or another got a signal
            step += 1
            check_finite(model, step, epoch, manager, loss=sums["loss"])
            window_steps += 1
            result["trained_steps"] += 1
            for k in epoch_sums:
                epoch_sums[k] += sums[k]
                window[k] += sums[k]
            if profiling and step >= options.profile_steps[1]:
                tf.profiler.experimental.stop()
                profiling = False
            progbar.update(step_in_epoch + 1, [
                ("loss", epoch_sums["loss"] / epoch_sums["count"]),
                ("top1", epoch_sums["top1"] / epoch_sums["count"]),
                ("top5", epoch_sums["top5"] / epoch_sums["count"]),
                ("lr", lr)])
            if step % options.log_steps == 0 or step_in_epoch + 1 == steps_per_epoch:
                elapsed = time.perf_counter() - window_start
                with train_writer.as_default(step=step):
                    for k in ("loss", "top1", "top5"):
                        tf.summary.scalar(k, window[k] / window["count"])
                    tf.summary.scalar("learning_rate", lr)
                    tf.summary.scalar("images_per_sec",
                                      window_steps * recipe.batch_size / elapsed)
                window = {k: 0.0 for k in window}
                window_start, window_steps = time.perf_counter(), 0
            if step_in_epoch + 1 < steps_per_epoch and (
                    stop or step % options.checkpoint_steps == 0):
                check_finite(model, step, epoch, manager)
                global_step.assign(step)
                save_checkpoint(manager, step)
                if stop:
                    if profiling:
                        tf.profiler.experimental.stop()
                    stop_run(step=step, epoch=epoch, **stopped)
        # A stop at the last step of an epoch ends the epoch first (below).
        if profiling:
            tf.profiler.experimental.stop()
            profiling = False
        train_seconds = time.perf_counter() - epoch_start

        if recipe.ema_momentum and epoch + 1 == recipe.epochs:
            # The average replaces the weights (what Keras' own fit does after its
            # last epoch), so the last epoch validates, saves and exports it.
            optimizer.finalize_variable_values(model.trainable_variables)
        _sync_eval_model(model, eval_model)
        val_iterator = iter(val_input())
        val_sums = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
        for _ in range(val_steps):
            for k, v in eval_step(val_iterator).items():
                val_sums[k] += float(v)
        if val_steps == full_val_steps:
            val_counter.flush()  # a whole pass: its last files are known too
        count = max(val_sums["count"], 1.0)
        trained = (steps_per_epoch - first) * recipe.batch_size
        entry = {
            "epoch": epoch,
            "loss": epoch_sums["loss"] / max(epoch_sums["count"], 1.0),
            "top1": epoch_sums["top1"] / max(epoch_sums["count"], 1.0),
            "top5": epoch_sums["top5"] / max(epoch_sums["count"], 1.0),
            "val_loss": val_sums["loss"] / count,
            "val_top1": val_sums["top1"] / count,
            "val_top5": val_sums["top5"] / count,
            "val_examples": int(val_sums["count"]),
            "learning_rate": float(optimizer.learning_rate),
            "images_per_sec": trained / max(train_seconds, 1e-9),
            "global_step": step,
            "corrupt_images_skipped": int(train_counter.skipped.numpy() +
                                          val_counter.skipped.numpy()),
        }
        history.append(entry)
        with val_writer.as_default(step=step):
            for k in ("loss", "top1", "top5"):
                tf.summary.scalar(k, entry["val_" + k])
        with train_writer.as_default(step=step):
            tf.summary.scalar("corrupt_images_skipped", entry["corrupt_images_skipped"])
        with files.writing("TensorBoard logs", logs_dir):
            train_writer.flush()
            val_writer.flush()
        if chief:
            print(f"epoch {epoch + 1}: loss {entry['loss']:.4f} top1 {entry['top1']:.4f} "
                  f"val_loss {entry['val_loss']:.4f} val_top1 {entry['val_top1']:.4f} "
                  f"val_top5 {entry['val_top5']:.4f} ({entry['images_per_sec']:.1f} img/s, "
                  f"{entry['corrupt_images_skipped']} corrupt images skipped)", flush=True)
            new = [f for f in train_counter.files() + val_counter.files()
                   if f not in reported_corrupt]
            if new:
                reported_corrupt.update(new)
                log.warning("%s", data_lib.describe_skipped(new))

        check_finite(model, step, epoch, manager)
        improved = entry["val_top1"] > float(best_top1.numpy())
        if improved:
            best_top1.assign(entry["val_top1"])
        files.atomic_save_weights(model, os.path.join(write_dir, LAST_WEIGHTS))
        if chief:
            if improved:
                files.atomic_save_weights(model, os.path.join(model_dir, BEST_WEIGHTS))
            files.atomic_write_text(os.path.join(model_dir, HISTORY_FILE),
                                    json.dumps(history, indent=2))
            plot_curves(history, os.path.join(model_dir, CURVES_FILE))
        global_step.assign(step)
        epochs_done.assign(epoch + 1)
        save_checkpoint(manager, step)
        if stop:
            stop_run(step=step, epoch=epoch, epoch_done=True, **stopped)

    print(f"Trained {result['trained_steps']} steps; global step {step}, "
          f"{recipe.epochs} epochs done.", flush=True)
    if chief:
        write_run_state(model_dir, run_info, status="finished")
    if chief and options.export:
        _sync_eval_model(model, eval_model)
        result["export"] = export_model(eval_model, model_dir, recipe.model,
                                        source.class_names)
        print(f"SavedModel: {result['export']}", flush=True)
    return result


def write_run_state(model_dir, run_info, *, status, **details):
    """Writes ``run.json``: the run's identity, ``status`` and ``details``.

    ``status`` is ``"training"``, ``"stopped"`` (with ``stopped``: the signal,
    global step, epoch and checkpoint) or ``"finished"``.
    """
    files.atomic_write_text(os.path.join(model_dir, RUN_FILE), json.dumps(
        {**run_info, "status": status, **details}, indent=2, default=list))


def stop_run(*, signals, step, epoch, epochs, manager, run_info, model_dir, chief, writers,
             epoch_done=False):
    """Ends a run asked to stop, after the checkpoint at ``step`` is saved.

    Flushes the TensorBoard writers, records the stop in ``run.json`` (chief)
    and raises ``run_control.TrainingStopped`` with the one line to print.
    """
    for writer in writers:
        writer.flush()
    checkpoint = manager.latest_checkpoint
    name = os.path.basename(checkpoint)
    if chief:
        write_run_state(model_dir, run_info, status="stopped", stopped={
            "signal": signals.name, "global_step": step, "epoch": epoch + 1,
            "epoch_done": epoch_done, "checkpoint": name})
    cause = (f"{signals.name} received" if signals.name else
             "another worker of the job received a stop signal")
    where = f"{'after' if epoch_done else 'in'} epoch {epoch + 1}/{epochs}"
    raise run_control.TrainingStopped(
        f"stopped: {cause}; saved checkpoint {name} at global step {step} ({where}) in "
        f"{manager.directory}; rerun the same command to resume from step {step}.",
        signal_name=signals.name, global_step=step, checkpoint=checkpoint)


def make_steps(strategy, model, eval_model, optimizer, recipe, *, decayed, num_classes,
               jit_compile=False):
    """The distributed training and evaluation steps.

    Each returns the per-batch sums ``loss``, ``top1``, ``top5``, ``count``
    reduced over all replicas. ``train_step(iterator, stop)`` also sums
    ``stop`` (1.0 where a process was asked to stop, else 0.0) in the step's
    own all-reduce, so every worker of a job learns at the same step that one
    of them got a signal, and all stop after that step. The training loss of
    a replica is its examples' cross-entropy divided by the global batch (``tf.nn.compute_average_loss``),
    plus the replica's share of the L2 penalty for SGD, so that the sum over
    replicas that the Keras optimizer all-reduces is the global-batch gradient.

    Args:
        strategy: the ``tf.distribute.Strategy`` the variables live in.
        model: the training model.
        eval_model: the evaluation model (``model``, or a copy at another size).
        optimizer: a built Keras optimizer.
        recipe: the ``Recipe``.
        decayed: variables under L2 decay (SGD).
        num_classes: number of classes (top-5 becomes top-k for fewer than 5).
        jit_compile: XLA-compile the per-replica functions.

    Returns:
        ``(train_step, eval_step)``: ``tf.function``s of a distributed iterator
        (and, for ``train_step``, a float32 scalar ``stop``).
    """
    import keras
    import tensorflow as tf

    l2 = recipe.optimizer == "sgd" and recipe.weight_decay > 0
    top_k = min(5, num_classes)

    def metric_sums(labels, probs, weights=None):
        targets = tf.argmax(labels, axis=-1, output_type=tf.int32)
        probs = tf.cast(probs, tf.float32)
        per_example = keras.losses.categorical_crossentropy(labels, probs)
        if weights is None:
            weights = tf.ones_like(per_example)
        top1 = tf.cast(tf.math.in_top_k(targets, probs, 1), tf.float32)
        top5 = tf.cast(tf.math.in_top_k(targets, probs, top_k), tf.float32)
        return {"loss": tf.reduce_sum(per_example * weights),
                "top1": tf.reduce_sum(top1 * weights),
                "top5": tf.reduce_sum(top5 * weights),
                "count": tf.reduce_sum(weights)}

    def train_replica_step(images, labels, stop):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, probs, label_smoothing=recipe.label_smoothing)
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=recipe.batch_size)
            if l2:
                penalty = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                    for v in decayed])
                loss += tf.nn.scale_regularization_loss(0.5 * recipe.weight_decay * penalty)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        # identity: each replica's own tensor, so that it is reduced over replicas.
        return {**metric_sums(labels, probs), "stop": tf.identity(stop)}

    def eval_replica_step(images, labels, weights):
        return metric_sums(labels, eval_model(images, training=False), weights)

    if jit_compile:
        train_replica_step = tf.function(train_replica_step, jit_compile=True)
        eval_replica_step = tf.function(eval_replica_step, jit_compile=True)

    def reduce(per_replica):
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    @tf.function
    def train_step(iterator, stop):
        return reduce(strategy.run(train_replica_step, args=(*next(iterator), stop)))

    @tf.function
    def eval_step(iterator):
        return reduce(strategy.run(eval_replica_step, args=next(iterator)))

    return train_step, eval_step


def _sync_eval_model(model, eval_model):
    if eval_model is not model:
        eval_model.set_weights(model.get_weights())
