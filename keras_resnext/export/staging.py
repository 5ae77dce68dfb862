"""Atomic writes: single text files, and a staging directory renamed into place.

Everything is written under a hidden ``.export-*`` name inside ``out_dir``
(TF Serving only loads numeric version directories, so it never sees it) and
renamed into place at the end; on failure nothing is left behind.
"""

import contextlib
import os
import shutil
import tempfile

from keras_resnext import files

_STAGING_PREFIX = ".export-"


def _atomic_write_text(path, text):
    files.atomic_write_text(path, text, prefix=_STAGING_PREFIX)


class _Staging:
    """Artifacts written under ``root`` and the final paths they move to."""

    def __init__(self, root):
        self.root = root
        self.moves = []

    def add(self, src, dst):
        self.moves.append((src, dst))

    def destination(self, src):
        return dict(self.moves).get(src, src)

    def commit(self):
        trash = os.path.join(self.root, "replaced")
        os.makedirs(trash)
        for i, (src, dst) in enumerate(self.moves):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):  # overwrite=True was checked up front
                os.replace(dst, os.path.join(trash, str(i)))
            os.replace(src, dst)


@contextlib.contextmanager
def _staging(out_dir):
    """A staging directory in ``out_dir``; renamed into place only on success."""
    os.makedirs(out_dir, exist_ok=True)
    staging = _Staging(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    try:
        yield staging
        staging.commit()
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
