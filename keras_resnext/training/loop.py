"""The training program: one custom loop for every tf.distribute strategy.

``fit`` runs a recipe as a sequence of stages: set up (strategy, dataset, run
directory checks), build (models, optimizer, checkpoint), restore, then per
epoch train, validate and end the epoch (history, weights, checkpoint), and
export. Its parts live beside it: ``models`` (the classifiers), ``steps``
(the distributed step functions, see keras-team/keras#20585 for why
``Model.fit`` is not used), ``optimization`` (schedule, optimizer, weight
decay), ``checkpoints`` (restore, save, divergence check), ``run_dir`` (the run
directory's files) and ``reporting`` (progress bar, TensorBoard, profiler).
Input comes from ``strategy.distribute_datasets_from_function``, one sharded
pipeline per worker.

Fault tolerance: a ``tf.train.Checkpoint`` (model, optimizer, global step,
finished epochs, best top-1) is written every ``checkpoint_steps`` steps and at
the end of every epoch; rerunning the same command restores it, skips the
batches of the current epoch already trained on, and stops at once when the
schedule is complete (damaged checkpoints: ``checkpoints.restore_checkpoint``).
A non-finite loss or weights stop the run before anything else is saved. In a
multi-worker job only the chief writes into ``model_dir``; the other workers
write their copies under ``model_dir/workers/<type>-<index>/`` (TensorFlow's
documented pattern).

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
import logging
import os
import time

from keras_resnext import extras
from keras_resnext import files
from keras_resnext import weights as weights_lib
from keras_resnext import families
from keras_resnext.families import size as size_lib
from keras_resnext.training import checkpoints
from keras_resnext.training import data as data_lib
from keras_resnext.training import models as models_lib
from keras_resnext.training import optimization
from keras_resnext.training import recipes as recipes_lib
from keras_resnext.training import reporting
from keras_resnext.training import run_control
from keras_resnext.training import run_dir
from keras_resnext.training import steps as steps_lib
from keras_resnext.training import strategies

MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")

# Names that lived here before the split, still importable from ``loop``.
RUN_FILE = run_dir.RUN_FILE
LAST_WEIGHTS = run_dir.LAST_WEIGHTS
known_models = models_lib.known_models
make_optimizer = optimization.make_optimizer
split_decay = optimization.split_decay
find_checkpoints = checkpoints.find_checkpoints

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


def validate(recipe, options):
    """Cheap checks of everything, before TensorFlow starts.

    Raises:
        ValueError: unknown model, strategy, dataset form or precision; bad options.
        extras.MissingExtraError: the [train] extra is not installed.
    """
    from keras_resnext import cli  # here: importing the training package leaves cli out

    extras.require("train", "Training")
    cli.refuse_frozen_weights("Training")
    models_lib.check_known(recipe.model)
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
    """``models.build_classifier`` of ``recipe.model`` with the recipe's BN initialisation."""
    return models_lib.build_classifier(
        recipe.model, num_classes=num_classes, image_size=image_size, weights=weights,
        sync_bn=sync_bn, zero_init_last_bn=recipe.zero_init_last_bn)


@dataclasses.dataclass
class _Run:
    """What the stages of one ``fit`` share; each stage says what it sets."""

    recipe: "recipes_lib.Recipe"
    options: RunOptions
    strategy: object
    source: object  # data_lib's dataset source
    run_info: dict  # what run.json records
    steps_per_epoch: int
    eval_size: int
    chief: bool
    write_dir: str  # model_dir (chief) or the worker's own folder
    signals: object = None  # run_control.StopSignals
    # _build
    model: object = None
    eval_model: object = None  # the model at the evaluation size (or ``model``)
    optimizer: object = None
    decayed: list = None  # variables under L2 decay
    global_step: object = None  # tf.Variable, checkpointed with the next two
    epochs_done: object = None
    best_top1: object = None
    checkpoint: object = None
    # _restore
    manager: object = None  # tf.train.CheckpointManager
    result: dict = None  # what ``fit`` returns (``history`` grows per epoch)
    step: int = 0  # the global step
    # _prepare_training
    train_step: object = None
    eval_step: object = None
    val_steps: int = 0
    full_val_steps: int = 0
    train_counter: object = None  # data_lib.CorruptCounter
    val_counter: object = None
    reported_corrupt: set = dataclasses.field(default_factory=set)
    writers: tuple = ()  # (train, validation) tf.summary writers

    @property
    def model_dir(self):
        return self.options.model_dir

    @property
    def history(self):
        return self.result["history"]


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
    run = _set_up(recipe, options)
    # Each process locks the folder it writes: the chief model_dir, a worker its own.
    with run_control.RunLock(run.write_dir), run_control.StopSignals() as run.signals:
        _build(run)
        _restore(run)
        if int(run.epochs_done.numpy()) >= recipe.epochs:
            return _already_finished(run)
        _prepare_training(run)
        for epoch in range(int(run.epochs_done.numpy()), recipe.epochs):
            trained = _train_epoch(run, epoch)
            validated = _validate(run, epoch)
            _end_epoch(run, epoch, trained, validated)
        return _finish(run)


def _set_up(recipe, options):
    """The strategy, the dataset and the checks of the run directory, before building."""
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
    eval_size = recipe.eval_transform().size
    run_info = {
        "model": recipe.model, "dataset": recipe.dataset,
        "num_classes": source.num_classes, "image_size": recipe.image_size,
        "eval_size": eval_size, "eval_crop_pct": recipe.eval_crop_pct,
        "batch_size": recipe.batch_size, "steps_per_epoch": steps_per_epoch,
        "recipe": recipe.to_dict(), "strategy": options.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "mixed_precision": options.mixed_precision, "onednn": options.onednn,
    }
    run_dir.check_model_dir(options.model_dir, run_info)
    if options.onednn is not None:
        from keras_resnext import cli

        # Once the run is accepted: a refused run prints its one error line only.
        print(cli.onednn_line(options.onednn), flush=True)

    chief = strategies.is_chief(strategy)
    task_type, task_id = strategies.task_identity(strategy)
    write_dir = options.model_dir if chief else os.path.join(
        options.model_dir, "workers", f"{task_type}-{task_id}")

    keras.mixed_precision.set_global_policy(options.mixed_precision)
    check_memory(recipe, strategy, source.num_classes)
    return _Run(recipe=recipe, options=options, strategy=strategy, source=source,
                run_info=run_info, steps_per_epoch=steps_per_epoch, eval_size=eval_size,
                chief=chief, write_dir=write_dir)


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
    spec = families.get_spec(recipe.model)
    size_lib.check(spec, input_shape=(recipe.image_size, recipe.image_size, 3),
                   classes=num_classes, training=True,
                   batch=recipe.batch_size // strategies.num_workers(strategy))


def _build(run):
    """Sets the models, the optimizer and the checkpoint of its state."""
    import keras
    import tensorflow as tf

    recipe, num_classes = run.recipe, run.source.num_classes
    keras.utils.set_random_seed(recipe.seed)  # same initial weights for a given seed
    with run.strategy.scope():
        run.model = build_model(recipe, num_classes=num_classes,
                                image_size=recipe.image_size, weights=run.options.weights,
                                sync_bn=run.options.sync_bn)
        run.eval_model = run.model if run.eval_size == recipe.image_size else build_model(
            recipe, num_classes=num_classes, image_size=run.eval_size)
        decay = optimization.split_decay(run.model, recipe)
        run.optimizer = optimization.make_optimizer(recipe, run.steps_per_epoch, decay,
                                                    run.options.mixed_precision)
        run.optimizer.build(run.model.trainable_variables)
    run.decayed = decay["decayed"]
    run.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    run.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    run.best_top1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_top1")
    run.checkpoint = tf.train.Checkpoint(
        model=run.model, optimizer=run.optimizer, step=run.global_step,
        epoch=run.epochs_done, best_top1=run.best_top1)


def _restore(run):
    """Restores the newest checkpoint (if any); sets the manager, result and step."""
    import tensorflow as tf

    # The inputs are good (the model is built, the weights loaded): from here on
    # files are written.
    latest = checkpoints.restore_checkpoint(run.checkpoint, run.model_dir, chief=run.chief)
    with files.writing("the run directory", run.write_dir):
        os.makedirs(run.write_dir, exist_ok=True)
    run.manager = tf.train.CheckpointManager(
        run.checkpoint, os.path.join(run.write_dir, run_dir.CHECKPOINT_DIR),
        max_to_keep=run.options.keep_checkpoints, checkpoint_name="ckpt")
    resumed_from = None
    history = []
    if latest:
        resumed_from = (int(run.epochs_done.numpy()), int(run.global_step.numpy()))
        history = run_dir.read_history(run.model_dir, resumed_from[0])
        log.info("Resuming from %s: %d finished epochs, global step %d.",
                 latest, *resumed_from)
        print(f"Resuming from {latest}: epoch {resumed_from[0] + 1}/{run.recipe.epochs}, "
              f"global step {resumed_from[1]}", flush=True)
    run.result = {"history": history, "resumed_from": resumed_from, "trained_steps": 0,
                  "export": None, "model_dir": run.model_dir}
    run.step = int(run.global_step.numpy())


def _already_finished(run):
    """``fit``'s result for a run whose epochs are all done (exports if still missing)."""
    print(f"The run in {run.model_dir} already finished its {run.recipe.epochs} epochs; "
          "nothing to train.", flush=True)
    if run.chief and run.options.export and run_dir.find_export(run.model_dir) is None:
        run.result["export"] = _export(run)
    else:
        run.result["export"] = run_dir.find_export(run.model_dir)
    return run.result


def _prepare_training(run):
    """Marks the run as training; sets the steps, counters, validation length and writers."""
    recipe, strategy, source = run.recipe, run.strategy, run.source
    if run.chief:
        run_dir.write_run_state(run.model_dir, run.run_info, status="training")
    run.train_step, run.eval_step = steps_lib.make_steps(
        strategy, run.model, run.eval_model, run.optimizer, recipe, decayed=run.decayed,
        num_classes=source.num_classes, jit_compile=run.options.jit_compile)
    run.train_counter = data_lib.CorruptCounter()
    run.val_counter = data_lib.CorruptCounter()
    num_pipelines = strategies.num_workers(strategy)
    run.full_val_steps = data_lib.eval_steps(source, recipe.batch_size,
                                             strategy.num_replicas_in_sync, num_pipelines)
    run.val_steps = min(run.full_val_steps, run.options.val_steps or run.full_val_steps)
    run.writers = _open_writers(run)


def _train_input(run, epoch, skip_steps):
    """The distributed training input of ``epoch``, its first ``skip_steps`` skipped."""
    def dataset_fn(context):
        # Each global step takes one per-replica batch per local replica.
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        return data_lib.train_dataset(run.source, run.recipe, input_context=context,
                                      epoch=epoch, skip_batches=skip_steps * replicas_here,
                                      counter=run.train_counter)
    return run.strategy.distribute_datasets_from_function(dataset_fn)


def _val_input(run):
    """The distributed validation input: ``run.val_steps`` global batches."""
    transform = run.recipe.eval_transform()

    def dataset_fn(context):
        return data_lib.eval_dataset(
            run.source, batch_size=run.recipe.batch_size, transform=transform,
            input_context=context, steps=run.val_steps, counter=run.val_counter)
    return run.strategy.distribute_datasets_from_function(dataset_fn)


def _open_writers(run):
    """The (train, validation) TensorBoard writers; the chief's show a sample and the graph."""
    import tensorflow as tf

    if not run.chief:
        writer = tf.summary.create_noop_writer()
        return writer, writer
    logs_dir = os.path.join(run.model_dir, run_dir.LOG_DIR)
    with files.writing("TensorBoard logs", logs_dir):
        train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
        val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))
    size = run.recipe.image_size
    with files.writing("TensorBoard logs", logs_dir), train_writer.as_default(step=run.step):
        sample = next(iter(data_lib.train_dataset(
            run.source, run.recipe, epoch=int(run.epochs_done.numpy()))))
        tf.summary.image("augmented_training_images",
                         data_lib.augmented_grid(sample[0]), max_outputs=1)
        forward = tf.function(lambda x: run.model(x, training=False)).get_concrete_function(
            tf.TensorSpec([1, size, size, 3], tf.float32))
        tf.summary.graph(forward.graph)
    return train_writer, val_writer


def _train_epoch(run, epoch):
    """Trains the steps of ``epoch`` not trained yet; a stop request ends the run.

    Returns:
        A dict: ``sums`` (``steps.zero_sums``'s keys), ``first`` (the first step
        trained in the epoch), ``seconds`` and ``stop`` (a stop was requested
        at the epoch's last step: the epoch ends first).
    """
    first = run.step - epoch * run.steps_per_epoch
    iterator = iter(_train_input(run, epoch, first))
    verbose = run.options.verbose if run.chief else 0
    if verbose:
        print(f"Epoch {epoch + 1}/{run.recipe.epochs}", flush=True)
    progbar = reporting.progress_bar(run.steps_per_epoch, verbose=verbose, done=first)
    sums, window = steps_lib.zero_sums(), reporting.Window(run.recipe.batch_size)
    profiler = reporting.Profiler(run.options.profile_steps if run.chief else None,
                                  os.path.join(run.model_dir, run_dir.LOG_DIR))
    epoch_start = time.perf_counter()
    stop = False
    for step_in_epoch in range(first, run.steps_per_epoch):
        profiler.start_at(run.step)
        lr = float(run.optimizer.learning_rate)  # the rate this step uses
        step_sums, stop = _train_step(run, iterator, epoch)
        for k in sums:
            sums[k] += step_sums[k]
        window.add(step_sums)
        profiler.stop_after(run.step)
        progbar.update(step_in_epoch + 1, [
            *((k, sums[k] / sums["count"]) for k in steps_lib.METRICS), ("lr", lr)])
        last = step_in_epoch + 1 == run.steps_per_epoch
        if run.step % run.options.log_steps == 0 or last:
            window.write(run.writers[0], run.step, lr)
        if not last and (stop or run.step % run.options.checkpoint_steps == 0):
            _save_in_epoch(run, epoch, stop=stop, profiler=profiler)
    # A stop at the last step of an epoch ends the epoch first (_end_epoch).
    profiler.stop()
    return {"sums": sums, "first": first, "seconds": time.perf_counter() - epoch_start,
            "stop": stop}


def _train_step(run, iterator, epoch):
    """One global step; returns its sums and whether a process asked to stop."""
    import tensorflow as tf

    requested = tf.constant(0.0 if run.signals.received is None else 1.0)
    sums = {k: float(v) for k, v in run.train_step(iterator, requested).items()}
    stop = sums.pop("stop") > 0  # this process or another got a signal
    run.step += 1
    checkpoints.check_finite(run.model, run.step, epoch, run.manager, loss=sums["loss"])
    run.result["trained_steps"] += 1
    return sums, stop


def _save_in_epoch(run, epoch, *, stop, profiler):
    """The checkpoint within an epoch (every ``checkpoint_steps``, or to stop)."""
    checkpoints.check_finite(run.model, run.step, epoch, run.manager)
    run.global_step.assign(run.step)
    checkpoints.save_checkpoint(run.manager, run.step)
    if stop:
        profiler.stop()
        _stop_run(run, epoch)


def _validate(run, epoch):
    """The validation sums (``steps.zero_sums``'s keys) of the model at the end of ``epoch``."""
    if run.recipe.ema_momentum and epoch + 1 == run.recipe.epochs:
        # The average replaces the weights (what Keras' own fit does after its
        # last epoch), so the last epoch validates, saves and exports it.
        run.optimizer.finalize_variable_values(run.model.trainable_variables)
    steps_lib.sync_eval_model(run.model, run.eval_model)
    iterator = iter(_val_input(run))
    sums = steps_lib.zero_sums()
    for _ in range(run.val_steps):
        for k, v in run.eval_step(iterator).items():
            sums[k] += float(v)
    if run.val_steps == run.full_val_steps:
        run.val_counter.flush()  # a whole pass: its last files are known too
    return sums


def _end_epoch(run, epoch, trained, validated):
    """Records the epoch (history, TensorBoard, weights, checkpoint); stops if asked."""
    entry = _history_entry(run, epoch, trained, validated)
    run.history.append(entry)
    _report_epoch(run, epoch, entry)
    checkpoints.check_finite(run.model, run.step, epoch, run.manager)
    improved = entry["val_top1"] > float(run.best_top1.numpy())
    if improved:
        run.best_top1.assign(entry["val_top1"])
    files.atomic_save_weights(run.model, os.path.join(run.write_dir, run_dir.LAST_WEIGHTS))
    if run.chief:
        if improved:
            files.atomic_save_weights(run.model,
                                      os.path.join(run.model_dir, run_dir.BEST_WEIGHTS))
        run_dir.write_history(run.model_dir, run.history)
    run.global_step.assign(run.step)
    run.epochs_done.assign(epoch + 1)
    checkpoints.save_checkpoint(run.manager, run.step)
    if trained["stop"]:
        _stop_run(run, epoch, epoch_done=True)


def _history_entry(run, epoch, trained, validated):
    """The ``history.json`` entry of ``epoch``."""
    sums, count = trained["sums"], max(validated["count"], 1.0)
    images = (run.steps_per_epoch - trained["first"]) * run.recipe.batch_size
    return {
        "epoch": epoch,
        **{k: sums[k] / max(sums["count"], 1.0) for k in steps_lib.METRICS},
        **{"val_" + k: validated[k] / count for k in steps_lib.METRICS},
        "val_examples": int(validated["count"]),
        "learning_rate": float(run.optimizer.learning_rate),
        "images_per_sec": images / max(trained["seconds"], 1e-9),
        "global_step": run.step,
        "corrupt_images_skipped": int(run.train_counter.skipped.numpy() +
                                      run.val_counter.skipped.numpy()),
    }


def _report_epoch(run, epoch, entry):
    """Writes ``entry`` to TensorBoard; the chief prints it and names new corrupt files."""
    reporting.write_epoch(run.writers, run.step, entry,
                          os.path.join(run.model_dir, run_dir.LOG_DIR))
    if not run.chief:
        return
    print(reporting.epoch_line(epoch, entry), flush=True)
    new = [f for f in run.train_counter.files() + run.val_counter.files()
           if f not in run.reported_corrupt]
    if new:
        run.reported_corrupt.update(new)
        log.warning("%s", data_lib.describe_skipped(new))


def _finish(run):
    """Marks the run finished and exports (chief); returns ``fit``'s result."""
    print(f"Trained {run.result['trained_steps']} steps; global step {run.step}, "
          f"{run.recipe.epochs} epochs done.", flush=True)
    if run.chief:
        run_dir.write_run_state(run.model_dir, run.run_info, status="finished")
    if run.chief and run.options.export:
        run.result["export"] = _export(run)
        print(f"SavedModel: {run.result['export']}", flush=True)
    return run.result


def _export(run):
    steps_lib.sync_eval_model(run.model, run.eval_model)
    return run_dir.export_model(run.eval_model, run.model_dir, run.recipe.model,
                                run.source.class_names)


def _stop_run(run, epoch, *, epoch_done=False):
    """Ends a run asked to stop, after the checkpoint at the global step is saved.

    Flushes the TensorBoard writers, records the stop in ``run.json`` (chief)
    and raises ``run_control.TrainingStopped`` with the one line to print.
    """
    for writer in run.writers:
        writer.flush()
    checkpoint = run.manager.latest_checkpoint
    name = os.path.basename(checkpoint)
    signal_name, step = run.signals.name, run.step
    if run.chief:
        run_dir.write_run_state(run.model_dir, run.run_info, status="stopped", stopped={
            "signal": signal_name, "global_step": step, "epoch": epoch + 1,
            "epoch_done": epoch_done, "checkpoint": name})
    cause = (f"{signal_name} received" if signal_name else
             "another worker of the job received a stop signal")
    where = f"{'after' if epoch_done else 'in'} epoch {epoch + 1}/{run.recipe.epochs}"
    raise run_control.TrainingStopped(
        f"stopped: {cause}; saved checkpoint {name} at global step {step} ({where}) in "
        f"{run.manager.directory}; rerun the same command to resume from step {step}.",
        signal_name=signal_name, global_step=step, checkpoint=checkpoint)
