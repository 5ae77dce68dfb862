"""The run directory's files: names, ``run.json``, history, curves and export.

A run directory (``model_dir``) holds ``run.json`` (the run's identity and
status), ``history.json`` and ``learning_curves.png`` (one entry per finished
epoch), ``best.weights.h5`` and ``last.weights.h5``, ``checkpoints/``
(``checkpoints.py``), TensorBoard ``logs/`` and the SavedModel under ``export/``.
"""

import json
import os

from keras_resnext import files

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


def write_run_state(model_dir, run_info, *, status, **details):
    """Writes ``run.json``: the run's identity, ``status`` and ``details``.

    ``status`` is ``"training"``, ``"stopped"`` (with ``stopped``: the signal,
    global step, epoch and checkpoint) or ``"finished"``.
    """
    files.atomic_write_text(os.path.join(model_dir, RUN_FILE), json.dumps(
        {**run_info, "status": status, **details}, indent=2, default=list))


def read_history(model_dir, epochs_done):
    """The entries of ``history.json`` for the first ``epochs_done`` epochs (``[]`` if none)."""
    path = os.path.join(model_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [h for h in json.load(f) if h["epoch"] < epochs_done]


def write_history(model_dir, history):
    """Writes ``history.json`` and its learning curves (``learning_curves.png``)."""
    files.atomic_write_text(os.path.join(model_dir, HISTORY_FILE),
                            json.dumps(history, indent=2))
    plot_curves(history, os.path.join(model_dir, CURVES_FILE))


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


def find_export(model_dir):
    """The SavedModel directory under ``export/``, or ``None`` if there is none."""
    root = os.path.join(model_dir, EXPORT_DIR)
    for dirpath, _, names in os.walk(root):
        if "saved_model.pb" in names:
            return dirpath
    return None
