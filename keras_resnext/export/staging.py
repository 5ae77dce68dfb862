"""Atomic writes: single text files, and a staging directory renamed into place.

Everything is written under a hidden ``.export-*`` name inside ``out_dir``
(TF Serving only loads numeric version directories, so it never sees it) and
renamed into place at the end; on failure nothing is left behind.

The name carries its owner: ``.export-<host>-<pid>-<start>-<random>``, with
the process's start time (Linux; 0 elsewhere) so that a reused PID is not
taken for the owner. An export that was killed (``kill -9``, out of memory)
cannot remove its staging; the next export into the same ``out_dir`` removes
every staging entry of this host whose owner is gone.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import tempfile

from keras_resnext import files

_STAGING_PREFIX = ".export-"
_OWNED = re.compile(r"^\.export-(?P<host>\w+)-(?P<pid>\d+)-(?P<start>\d+)-")

log = logging.getLogger("keras_resnext.export")


def _host():
    return re.sub(r"\W", "_", socket.gethostname()) or "localhost"


def _start_time(pid):
    """Start time of process ``pid`` in clock ticks after boot (Linux), else 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # Field 22; the command name (field 2, in parentheses) may hold spaces.
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _owner_prefix():
    """The staging name prefix of this process."""
    pid = os.getpid()
    return f"{_STAGING_PREFIX}{_host()}-{pid}-{_start_time(pid)}-"


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    now = _start_time(pid)
    return start == 0 or now == 0 or now == start


def remove_stale_staging(out_dir):
    """Removes the staging entries in ``out_dir`` left by dead exports of this host.

    Returns:
        The names removed.
    """
    removed = []
    host = _host()
    for name in sorted(os.listdir(out_dir)):
        match = _OWNED.match(name)
        if not match or match["host"] != host or _alive(int(match["pid"]), int(match["start"])):
            continue
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(name)
    if removed:
        log.info("Removed the staging of interrupted exports in %s: %s", out_dir,
                 ", ".join(removed))
    return removed


def atomic_write_text(path, text):
    files.atomic_write_text(path, text, prefix=_owner_prefix())


class _Staging:
    """Artifacts written under ``root`` and the final paths they move to."""

    def __init__(self, root, overwrite):
        self.root = root
        self.overwrite = overwrite
        self.moves = []

    def add(self, src, dst):
        self.moves.append((src, dst))

    def destination(self, src):
        return dict(self.moves).get(src, src)

    def commit(self):
        """Moves every artifact into place: all of them, or none.

        Raises:
            FileExistsError: without ``overwrite``, a destination exists (another
                export published it while this one ran); the artifacts this
                export had already moved are moved back.
        """
        if self.overwrite:
            self._replace_all()
            return
        done = []
        try:
            for src, dst in self.moves:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                _move_no_replace(src, dst)
                done.append((src, dst))
        except FileExistsError:
            for src, dst in reversed(done):
                os.rename(dst, src)
            raise

    def _replace_all(self):
        trash = os.path.join(self.root, "replaced")
        os.makedirs(trash)
        for i, (src, dst) in enumerate(self.moves):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):
                os.replace(dst, os.path.join(trash, str(i)))
            os.replace(src, dst)


def _move_no_replace(src, dst):
    """Renames ``src`` to ``dst`` unless ``dst`` exists, also one created meanwhile.

    A directory is renamed: POSIX refuses to rename it onto a non-empty
    directory, and a version directory another export publishes is never
    empty. A file is hard-linked (``os.link`` refuses an existing name, where
    ``os.rename`` replaces it) and its staging name removed.

    Raises:
        FileExistsError: ``dst`` exists; it is left as it is.
    """
    refused = FileExistsError(
        errno.EEXIST, "Another export published this artifact while this one ran; "
        "nothing of this export was published. Pass overwrite=True (--overwrite) to "
        "replace it, or choose another version", os.fspath(dst))
    if os.path.lexists(dst):
        raise refused
    if os.path.isdir(src):
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise refused from None
            raise
        return
    try:
        os.link(src, dst)
    except FileExistsError:
        raise refused from None
    except OSError:  # a file system without hard links: checked above, then renamed
        os.rename(src, dst)
        return
    os.remove(src)


@contextlib.contextmanager
def staged(out_dir, *, overwrite=False):
    """A staging directory in ``out_dir``; renamed into place only on success.

    Stale staging of killed exports is removed first. A write that fails for
    lack of space or permission raises an ``OSError`` naming ``out_dir``
    (``files.writing``); the staging directory is removed in every case, and
    ``out_dir`` too on failure if this export created it and it is empty.

    Args:
        out_dir: the output directory.
        overwrite: replace existing artifacts; without it, an artifact that
            exists when the staging is committed (another export published it
            meanwhile) makes the commit raise ``FileExistsError`` and publish
            nothing.
    """
    created = not os.path.exists(out_dir)
    with files.writing("the export", out_dir):
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_staging(out_dir)
        staging = _Staging(tempfile.mkdtemp(prefix=_owner_prefix(), dir=out_dir), overwrite)
        try:
            yield staging
            staging.commit()
        except BaseException:
            shutil.rmtree(staging.root, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(out_dir)  # only if nothing else was written there
            raise
        shutil.rmtree(staging.root, ignore_errors=True)
