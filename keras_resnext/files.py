"""Atomic file writes: a temporary file beside the destination, then a rename.

A reader (TF Serving, a resumed training job, a second process loading the
weights cache) sees either the old file or the whole new one, never half of
one; on failure the temporary file is removed.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, *, suffix="", prefix=".tmp-"):
    """Yields a temporary path in ``path``'s folder, renamed onto ``path`` on success.

    Args:
        path: the destination file (its folder is created if missing).
        suffix: suffix of the temporary name (writers that check extensions,
            such as Keras' ``save_weights``, need the real one).
        prefix: prefix of the temporary name (hidden by default).

    Yields:
        The temporary path to write to.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; servers and other users read these
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text, *, prefix=".tmp-"):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, prefix=prefix) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_save_weights(model, path):
    """``model.save_weights(path)`` atomically (``path`` ends in ``.weights.h5``)."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)
