"""Checkpoints of a run: find, restore (skipping damaged ones), save, divergence check.

A ``tf.train.Checkpoint`` (model, optimizer, global step, finished epochs,
best top-1) lives in ``model_dir/checkpoints/ckpt-N``. A damaged checkpoint
(truncated or missing data file, corrupt index) is moved to
``checkpoints/damaged/`` and the next older one is used; a missing state file
(``checkpoints/checkpoint``) is rebuilt from the ``ckpt-N`` files; a run whose
files exist but whose checkpoints are all gone is refused, never silently
restarted. A non-finite loss or weights stop the run before anything is saved.
"""

import logging
import math
import os
import re

from keras_resnext import files
from keras_resnext.training import run_dir

log = logging.getLogger("keras_resnext.training")


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

    directory = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
    candidates, recovered = _candidates(directory)
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
    _refuse_unresumable(model_dir, directory, damaged)
    return None


def _candidates(directory):
    """The checkpoints to try, newest first, and whether the state file was missing."""
    import tensorflow as tf

    on_disk = find_checkpoints(directory)
    state = tf.train.get_checkpoint_state(directory)
    recovered = state is None or not state.model_checkpoint_path
    if not recovered:
        latest = os.path.join(directory, os.path.basename(state.model_checkpoint_path))
        number = _checkpoint_number(latest)
        return [latest] + [p for p in on_disk if _checkpoint_number(p) < number], recovered
    if on_disk:
        log.warning("%s is missing: resuming from the newest checkpoint on disk, %s.",
                    os.path.join(directory, "checkpoint"), os.path.basename(on_disk[0]))
    return on_disk, recovered


def _refuse_unresumable(model_dir, directory, damaged):
    """Raises ``ValueError`` if the run has results or ``damaged`` checkpoints but none left."""
    results = [name for name in (run_dir.HISTORY_FILE, run_dir.BEST_WEIGHTS,
                                 run_dir.LAST_WEIGHTS)
               if os.path.exists(os.path.join(model_dir, name))]
    if damaged or results:
        what = (f"its checkpoints are damaged ({', '.join(damaged)})" if damaged
                else f"no checkpoint is left in {directory}")
        raise ValueError(
            f"model_dir={model_dir!r} holds a run ({', '.join(results) or 'checkpoints'}) "
            f"but {what}, so it cannot be resumed. Nothing else was changed; use "
            "another --model-dir, or delete this one to start over.")


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
