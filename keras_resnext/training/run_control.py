"""Who may write a run directory, and how a run stops when it is asked to.

``RunLock``: one writer per run directory. A lock file (``run.lock``: the
holder's PID, host and start time) is created with ``O_CREAT | O_EXCL`` and
held with ``flock``, which the kernel releases when the process dies, however
it dies: a lock file that nobody holds is the stale lock of a dead process and
is taken over (one line says so). ``flock`` makes the take-over race-free (two
processes that find the same stale lock cannot both get it); where ``fcntl``
does not exist (Windows) an existing lock file is always refused.

``StopSignals``: SIGTERM (``docker stop``, Kubernetes, Slurm, preemptible VMs,
sent with a grace period) and SIGINT (Ctrl-C) set a flag instead of killing
the process; the training loop finishes the current step, saves a checkpoint
at it and raises ``TrainingStopped``. A second signal of the same kind acts as
it would without the handler (Ctrl-C twice stops at once).
"""

import contextlib
import datetime
import errno
import json
import logging
import os
import signal
import socket
import threading
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "run.lock"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("keras_resnext.training")


class TrainingStopped(Exception):
    """The run stopped on a signal after saving a checkpoint at ``global_step``.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"`` (the signal this process got;
            ``None`` when another worker of the job got it).
        global_step: the step saved.
        checkpoint: the checkpoint written (its prefix).
        exit_code: the shell's code for the signal (128 + its number: 143
            for SIGTERM, 130 for SIGINT), as if the signal had ended the
            process; 143 when another worker got the signal.
    """

    def __init__(self, message, *, signal_name, global_step, checkpoint):
        super().__init__(message)
        self.signal_name = signal_name
        self.global_step = global_step
        self.checkpoint = checkpoint
        number = getattr(signal, signal_name or "SIGTERM")
        self.exit_code = 128 + int(number)


class StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop (``received``).

    A context manager: the handlers are installed on entry and the previous
    ones restored on exit. Outside the main thread (where Python cannot set
    signal handlers) it does nothing.
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = signals
        self.received = None  # the first signal's number
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number in self._previous:
            signal.signal(number, self._restore(number))
        self._previous = {}
        return False

    @property
    def name(self):
        """The received signal's name (``"SIGTERM"``), or None."""
        return None if self.received is None else signal.Signals(self.received).name

    def _handle(self, number, frame):
        # Only a flag: the loop reads it between steps. The previous handler
        # takes the next signal of this kind (a second Ctrl-C stops at once).
        if self.received is None:
            self.received = number
        signal.signal(number, self._restore(number))

    def _restore(self, number):
        previous = self._previous.get(number)
        return signal.SIG_DFL if previous is None else previous  # None: not set from Python


class RunLock:
    """The lock of a run directory: ``with RunLock(directory): ...``.

    Entering creates ``directory`` if needed (and removes it again on exit if
    it was created here and is still empty), then takes ``directory/run.lock``;
    exiting (on every path: return, exception, signal) releases it and
    removes the file.

    Raises (on entry):
        FileExistsError: another live process holds the lock; one line
            naming the directory, the holder's PID and host, and the lock file.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = None
        self._created = []

    def __enter__(self):
        self._makedirs()
        try:
            self._acquire()
        except BaseException:
            self._remove_created_dirs()
            raise
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    def release(self):
        """Removes the lock file and releases the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # while still held: nobody can take it in between
        os.close(self._fd)
        self._fd = None
        self._remove_created_dirs()

    def _acquire(self):
        for _ in range(10):  # retried only when the file changed under us
            created, fd = self._open()
            if fd is None:
                continue
            if not _try_lock(fd, created):
                holder = _read_holder(fd, wait=True)
                os.close(fd)
                raise FileExistsError(
                    f"{self.directory!r} is in use by another run: process "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')} "
                    f"(since {holder.get('since', '?')}) holds {self.path}. Wait for it "
                    "to finish or stop it; use another directory to run both.")
            if not _same_file(fd, self.path):  # released and removed meanwhile
                os.close(fd)
                continue
            holder = {} if created else _read_holder(fd)
            if holder:  # the record of a process that did not remove its lock
                log.warning("Took over the stale lock %s of process %s on %s, which no "
                            "longer holds it (it ended without releasing it).", self.path,
                            holder.get("pid", "?"), holder.get("host", "?"))
            self._fd = fd
            self._write_holder()
            return
        raise OSError(errno.EAGAIN, f"Cannot take the lock {self.path} (it keeps changing)",
                      self.path)

    def _open(self):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            return True, fd
        except FileExistsError:
            pass
        try:
            return False, os.open(self.path, os.O_RDWR)
        except FileNotFoundError:  # removed by its holder in between
            return False, None

    def _write_holder(self):
        text = json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, text.encode("utf-8"))
        os.fsync(self._fd)

    def _makedirs(self):
        missing = []
        path = os.path.abspath(self.directory)
        while not os.path.exists(path):
            missing.append(path)
            path = os.path.dirname(path)
        os.makedirs(self.directory, exist_ok=True)
        self._created = missing  # deepest first

    def _remove_created_dirs(self):
        for path in self._created:
            try:
                os.rmdir(path)
            except OSError:  # not empty: the run wrote something; keep it
                break
        self._created = []


def _try_lock(fd, created):
    if fcntl is None:
        return created
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd, path):
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd, wait=False):
    """The holder's record (``pid``, ``host``, ``since``); ``{}`` if unreadable.

    With ``wait``, an empty record is read again for up to a second (a holder
    writes it just after taking the lock).
    """
    for _ in range(10 if wait else 1):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = json.loads(os.read(fd, 4096).decode("utf-8"))
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            time.sleep(0.1)
    return {}
