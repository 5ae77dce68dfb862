"""Atomic file writes: a temporary file beside the destination, then a rename.

A reader (TF Serving, a resumed training job, a second process loading the
weights cache) sees either the old file or the whole new one, never half of
one; on failure the temporary file is removed. ``check_writable_dir`` checks
an output directory before any work, and ``writing`` turns a failed write
(a full disk, a read-only mount; Python's or TensorFlow's error) into an
``OSError`` that names what was being written.
"""

import contextlib
import errno
import math
import os
import shutil
import sys
import tempfile

import numpy as np

try:
    import resource
except ImportError:  # Windows
    resource = None

# HDF5 file size: weights plus about 2 KiB per variable (measured on the quick
# model and ResNeXt-50), with a margin.
_H5_BASE_BYTES = 64 * 1024
_H5_BYTES_PER_VARIABLE = 4096


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

    Raises:
        OSError: the write failed (see ``writing``); nothing is left behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    with writing(os.path.basename(path), path):
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
    """``model.save_weights(path)`` atomically (``path`` ends in ``.weights.h5``).

    Raises:
        OSError: ``ENOSPC``/``EFBIG`` before writing if the file cannot fit
            (free space, the process's file size limit): HDF5 crashes the
            interpreter when it closes a file whose writes failed, so h5py is
            not given the chance to fill a disk.
    """
    size = _H5_BASE_BYTES + sum(
        _H5_BYTES_PER_VARIABLE + math.prod(v.shape) * _itemsize(v.dtype)
        for v in model.weights)
    check_space(path, size)
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def _itemsize(dtype):
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # "bfloat16" and other names NumPy does not know
        bits = "".join(c for c in str(dtype) if c.isdigit())
        return int(bits) // 8 if bits else 8


def check_space(path, size):
    """Raises ``OSError`` if a ``size``-byte file cannot be written at ``path``.

    Checks the free space of the file system (``ENOSPC``) and the process's
    file size limit (``EFBIG``, ``RLIMIT_FSIZE``).
    """
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    limit = -1
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = -1 if limit == resource.RLIM_INFINITY else limit
    for code, available in ((errno.ENOSPC, free), (errno.EFBIG, limit)):
        if 0 <= available < size:
            raise OSError(
                code, f"Cannot write {os.path.basename(path)} ({os.strerror(code)}: "
                f"{size} bytes needed, {available} available)", os.fspath(path))


def check_writable_dir(path, *, name="directory"):
    """Raises unless files can be written in directory ``path``; creates nothing.

    A missing ``path`` is fine if its nearest existing ancestor is a writable
    directory (``path`` is created later, when there is something to write).

    Args:
        path: the directory.
        name: what ``path`` is, for the message (e.g. ``"model_dir"``).

    Raises:
        ValueError: ``path`` or an ancestor is a file.
        PermissionError: the directory cannot be written (permissions, a
            read-only file system).
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"`{name}` must be a directory, but {existing!r} is a file. "
            f"Received: {name}={path!r}")
    try:
        # O_TMPFILE where available: no name ever appears in the directory.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        what = (f"Cannot write into `{name}`" if existing == path else
                f"Cannot create `{name}` {path!r}")
        raise PermissionError(e.errno, f"{what} ({e.strerror})", existing) from None


# Errors of a write that TensorFlow reports in the message of an OpError.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)


@contextlib.contextmanager
def writing(what, path):
    """Re-raises a failed write in the block as an ``OSError`` naming ``path``.

    An ``OSError`` without a file name (h5py's, a ``write`` on a full disk)
    and a TensorFlow ``OpError`` of a full disk, an exceeded quota or file
    size, a read-only file system or a denied permission (the
    ``ResourceExhaustedError`` of a full disk) become ``OSError(errno,
    "Cannot write <what> (<reason>)", path)``; an ``OSError`` that names its
    file and other exceptions pass through.

    Args:
        what: what is written, for the message (e.g. ``"checkpoint ckpt-3"``).
        path: the file or directory written.
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        reason = os.strerror(e.errno) if e.errno else _first_line(e)
        raise OSError(e.errno, f"Cannot write {what} ({reason})", os.fspath(path)) from e
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.OpError):
            raise
        message = _first_line(e)
        code = next((c for c in _WRITE_ERRNOS if os.strerror(c) in message), None)
        if code is None:
            raise
        raise OSError(code, f"Cannot write {what} ({os.strerror(code)})",
                      os.fspath(path)) from e


def _first_line(error):
    text = str(getattr(error, "message", "") or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
