"""What every command-line program of the project shares.

``run(main, argv)`` wraps a program's ``main``: TensorFlow starts quietly
(unless ``--verbose``), and any exception becomes one line on stderr,
``error: <message>``, with a non-zero exit code (2 for bad input, 1 for other
failures, 130 for Ctrl-C); an unexpected exception adds a hint to rerun with
``--verbose``, which prints the traceback. ``ArgumentParser`` reports a bad
argument in one line too, and the argument types (``finite_float``,
``positive_int``, ``output_file``, ``output_dir``, ``parse_bool``,
``parse_int_tuple``) and readers (``read_json``, ``read_lines``) check what the
user gave before any work starts; ``add_override_arguments`` adds one flag per
field of a configuration (the training recipe's).

TensorFlow prints start-up lines on a machine without a GPU (the CUDA probe,
absl's "All log messages before absl::InitializeLog()", the CPU-instructions
notice, oneDNN). Some of them ignore ``TF_CPP_MIN_LOG_LEVEL``, so ``run`` also
imports TensorFlow with the process's stderr (file descriptor 2) redirected
to a temporary file, then writes back every captured line that is not one of
those known notices: real errors still show.

``choose_onednn(argv)`` sets ``TF_ENABLE_ONEDNN_OPTS`` for a program from its
``--onednn auto|on|off`` and the CPU's flags (``/proc/cpuinfo``), before
TensorFlow is imported; the library itself never changes it.

This module imports only the standard library, and importing the package
imports none of its modules (``keras_resnext/__init__.py``), so a script imports
it before anything starts TensorFlow (whose start-up lines would otherwise be out
before ``run`` could quiet them)::

    from keras_resnext import cli

    def main(argv=None):
        return cli.run(run, argv)  # `run(argv)` uses the package and does the work
"""

import argparse
import contextlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import traceback

VERBOSE_FLAG = "--verbose"
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
# Errors that mean "what you gave cannot be used": exit code 2, no hint.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                    IsADirectoryError, PermissionError)
# Failures that are not bugs (a full disk, a diverged run, a missing extra): exit code 1,
# no hint.
# (ImportError: a missing package, e.g. an extra, is the environment's, not a bug.)
EXPECTED_ERRORS = (OSError, FloatingPointError, ImportError)
# TensorFlow's start-up notices on a machine without a GPU (none is an error of
# the program); any other captured line is written back.
TENSORFLOW_NOISE = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cudart_stub\.cc.*Could not find cuda drivers",
    r"failed call to cuInit",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc.*already registered",
    r"TF-TRT Warning: Could not find TensorRT",
)))


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``error: <message>``."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def verbose_requested(argv):
    """Whether ``argv`` asks for TensorFlow's logs and tracebacks.

    ``--verbose`` alone (or with a level above 1: ``fit.py`` also takes
    ``--verbose 0`` and ``--verbose 1`` for its progress bar).
    """
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == VERBOSE_FLAG:
            level = argv[i + 1] if i + 1 < len(argv) else ""
            return level not in ("0", "1")
        if arg.startswith(VERBOSE_FLAG + "="):
            return arg.partition("=")[2] not in ("0", "1")
    return False


def run(main, argv=None):
    """Runs ``main(argv)`` as a program; returns its exit code.

    Args:
        main: the program, ``main(argv) -> exit code or None``.
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        ``main``'s exit code (``None`` is 0), 2 for bad input (``ValueError``,
        a missing or unwritable path, ...), 1 for any other exception, 130
        on Ctrl-C. ``SystemExit`` (argparse, ``--help``) passes through.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = verbose_requested(argv)
    log_to_stderr(verbose)
    try:
        if not verbose:
            quiet_tensorflow()
        with _quiet_unraisable(not verbose):
            code = main(argv)
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001: the program's last line of defence
        if verbose:
            traceback.print_exc()
        expected = isinstance(error, BAD_INPUT_ERRORS + EXPECTED_ERRORS)
        line = describe(error) if expected else f"{type(error).__name__}: {describe(error)}"
        if not expected and not verbose:
            line += f" (rerun with {VERBOSE_FLAG} for the traceback)"
        print(f"error: {line}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT if isinstance(error, BAD_INPUT_ERRORS) else EXIT_FAILURE
    return 0 if code is None else code


def log_to_stderr(verbose=False):
    """The package's log messages (INFO and up) go to stderr; with ``verbose``, everyone's.

    A handler of the root logger (a test's, an application's) is used if present.
    """
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to the current ``sys.stderr`` (which a test may have replaced)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("keras_resnext")
    logger.setLevel(logging.INFO)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    elif not logging.getLogger().handlers and not any(
            getattr(h, "keras_resnext_cli", False) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.keras_resnext_cli = True
        logger.addHandler(handler)


@contextlib.contextmanager
def _quiet_unraisable(quiet):
    """Drops "Exception ignored in ..." reports (e.g. h5py's, after a failed write).

    They follow an error that is reported anyway; ``--verbose`` shows them.
    """
    if not quiet:
        yield
        return
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def describe(error):
    """An exception as one line: its message (with the file of an ``OSError``)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
        if error.filename is not None:
            text += f": {os.fsdecode(error.filename)!r}"
        if error.filename2 is not None:
            text += f" -> {os.fsdecode(error.filename2)!r}"
    else:
        # TensorFlow's errors keep the op's message in `.message`.
        text = str(getattr(error, "message", None) or error) or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if isinstance(error, BAD_INPUT_ERRORS) else (lines or [""])[0]


def quiet_tensorflow():
    """Imports TensorFlow without its start-up notices (a no-op once imported or if absent).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) and imports TensorFlow and
    lists its devices (the CUDA probe) with file descriptor 2 redirected;
    captured lines other than ``TENSORFLOW_NOISE`` are written back to stderr.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return  # (without TensorFlow, what needs it says so: keras_resnext.extras)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _captured_stderr() as captured:
        import tensorflow as tf

        tf.config.list_physical_devices()
    kept = [line for line in captured if line.strip() and not TENSORFLOW_NOISE.search(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def _captured_stderr():
    """Redirects file descriptor 2 to a temporary file; yields the list of its lines.

    The list is filled when the block ends; if the block raises, the captured
    text is written back unfiltered first.
    """
    lines = []
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield lines
            except BaseException:
                os.dup2(saved, 2)
                capture.seek(0)
                sys.stderr.write(capture.read().decode(errors="replace"))
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())
    finally:
        os.close(saved)


# --------------------------------------------------------------------------- oneDNN


ONEDNN_FLAG = "--onednn"
ONEDNN_MODES = ("auto", "on", "off")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Where the CPU flags are read from: /proc/cpuinfo, unless this names another
# file (for tests: a fake CPU).
CPUINFO_ENV = "KERAS_RESNEXT_CPUINFO"
# Truthy: oneDNN reorders each convolution's and matmul's weights once, at the op's
# first call, and reuses them (tensorflow/core/util/onednn_env_vars.cc). Inference
# gets faster; training silently stops changing what the model computes.
FROZEN_WEIGHTS_ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"
# With any of these CPU flags TensorFlow turns oneDNN on by itself (Linux x86,
# tensorflow/core/util/port.cc, DefaultOneDnnPolicy).
TENSORFLOW_ONEDNN_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                           "amx_int8", "amx_bf16")


def cpu_flags():
    """The CPU's feature flags from ``/proc/cpuinfo`` (or ``$KERAS_RESNEXT_CPUINFO``).

    Returns:
        A set of flag names, or None where the file cannot be read (not Linux).
    """
    path = os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return set()


def add_onednn_argument(parser):
    """Adds ``--onednn auto|on|off`` (read by ``choose_onednn`` before TensorFlow starts)."""
    parser.add_argument(
        ONEDNN_FLAG, choices=ONEDNN_MODES, default="auto",
        help="TensorFlow's oneDNN kernels: 'auto' (default) turns them on on an x86 CPU "
             f"with AVX2 where TensorFlow leaves them off (no AVX-512 VNNI/BF16, AVX-VNNI "
             f"or AMX), unless {ONEDNN_ENV} is set; 'on'/'off' set {ONEDNN_ENV}")


def onednn_mode(argv):
    """The ``--onednn`` value in ``argv`` (``"auto"`` if absent or not a known mode)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == ONEDNN_FLAG and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(ONEDNN_FLAG + "="):
            value = arg.partition("=")[2]
        else:
            continue
        # argparse reports a bad value later, in one line.
        return value if value in ONEDNN_MODES else "auto"
    return "auto"


def choose_onednn(argv=None):
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` for a program, before TensorFlow is imported.

    Programs (``training/fit.py``, ``applications/benchmark.py``) call it
    first; the library never changes the setting. ``--onednn on``/``off`` set
    it. ``auto`` keeps a setting the user exported, and otherwise turns oneDNN
    on where TensorFlow would leave it off on an x86 CPU with AVX2 (training
    there is 1.7x faster with it, docs/cpu.md); elsewhere it leaves
    TensorFlow's default. The program prints ``onednn_line(choice)`` once its
    arguments are checked, and records ``choice`` with its results.

    Args:
        argv: the program's arguments (default ``sys.argv[1:]``).

    Returns:
        A dict for the run record: ``mode``, ``setting`` (the value of
        ``TF_ENABLE_ONEDNN_OPTS``, None for TensorFlow's default) and ``reason``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    mode = onednn_mode(argv)
    user = os.environ.get(ONEDNN_ENV)
    if "tensorflow" in sys.modules:
        setting, reason = user, "TensorFlow was already imported: setting unchanged"
    elif mode != "auto":
        setting = "1" if mode == "on" else "0"
        reason = f"{ONEDNN_FLAG} {mode}"
    elif user is not None:
        setting, reason = user, f"{ONEDNN_ENV}={user} set by the user"
    else:
        setting, reason = _auto_onednn(cpu_flags())
    if setting is not None:
        os.environ[ONEDNN_ENV] = setting
    return {"mode": mode, "setting": setting, "reason": reason}


def refuse_frozen_weights(what):
    """Raises if ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`` is on: ``what`` would not train.

    With it, oneDNN keeps the weights each layer had at its first call (the
    loss of a small CNN stays where it started, docs/cpu.md), and nothing
    reports it.

    Args:
        what: what was about to train, for the message (e.g. ``"Training"``).

    Raises:
        ValueError: the variable is ``1`` or ``true`` (TensorFlow's reading).
    """
    value = os.environ.get(FROZEN_WEIGHTS_ENV, "")
    if value.strip().lower() in ("1", "true"):
        raise ValueError(
            f"{what} refused: {FROZEN_WEIGHTS_ENV}={value} makes oneDNN keep every "
            "layer's weights from its first call, so training would not change what the "
            f"model computes. Unset it (it is for inference-only processes). "
            f"Received: {FROZEN_WEIGHTS_ENV}={value!r}")


def onednn_line(choice):
    """``choose_onednn``'s choice as one line, e.g. ``oneDNN: on (--onednn on)``."""
    state = {None: "TensorFlow's default", "1": "on", "0": "off"}.get(
        choice["setting"], f"{ONEDNN_ENV}={choice['setting']}")
    return f"oneDNN: {state} ({choice['reason']})"


def _auto_onednn(flags):
    """``(setting, reason)`` of ``--onednn auto`` for a CPU with ``flags``."""
    if flags is None:
        return None, "CPU flags unknown"
    own = sorted(flags.intersection(TENSORFLOW_ONEDNN_FLAGS))
    if own:
        return None, f"TensorFlow turns it on for {own[0]}"
    if "avx2" not in flags:
        return None, "no AVX2"
    return "1", "auto: x86 CPU without AVX-512 VNNI/BF16, AVX-VNNI or AMX"


# --------------------------------------------------------------------------- argument types


def finite_float(text):
    """argparse type: a finite float (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number. Received: {text!r}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1. Received: {text!r}")
    return value


def output_file(text):
    """argparse type: a file path whose folder exists and is writable (nothing created)."""
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(
            f"the folder of {text!r} does not exist ({folder!r}); create it first")
    _check_writable(folder, text)
    return text


def output_dir(text):
    """argparse type: a directory that exists or can be created, and is writable.

    Nothing is created: the nearest existing folder is checked.
    """
    path = os.path.abspath(os.path.expanduser(text))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot be a directory: {existing!r} is a file")
    _check_writable(existing, text)
    return text


def _check_writable(folder, text):
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f"cannot write into {folder!r} for {text!r} ({e.strerror})") from None


# --------------------------------------------------------------------------- input files


def read_text(path, option):
    """The text of the file ``option`` names.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: naming ``option``
            and ``path``.
        ValueError: the file is not UTF-8 text.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise type(e)(e.errno, f"{option}: {e.strerror}", path) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{option} {path!r} is not UTF-8 text ({e.reason})") from None


def read_json(path, option, parse=None):
    """The JSON value of the file ``option`` names, or ``parse(value)``.

    Raises:
        ValueError: not JSON, or ``parse`` refused the value (its
            ``ValueError``/``TypeError``/``AttributeError``), naming ``option``
            and ``path``; otherwise as ``read_text``.
    """
    import json

    text = read_text(path, option)
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{option} {path!r} is not valid JSON ({e})") from None
    if parse is None:
        return value
    try:
        return parse(value)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{option} {path!r}: {e}") from None


def read_lines(path, option):
    """The non-empty, stripped lines of the file ``option`` names."""
    return [line.strip() for line in read_text(path, option).splitlines() if line.strip()]


def parse_bool(text):
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``) as a bool."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, received {text!r}")


def parse_int_tuple(text):
    """``"30,60,80"`` as ``(30, 60, 80)``."""
    return tuple(int(part) for part in text.split(",") if part.strip())


def add_override_arguments(parser, field_types, title):
    """Adds one ``--flag`` per field of ``field_types`` to a group ``title``.

    The default is ``None`` (keep the configured value, e.g. the recipe's);
    booleans take ``true``/``false``, tuples are comma-separated and floats
    must be finite.

    Args:
        parser: an ``argparse.ArgumentParser``.
        field_types: ``{field name: bool, tuple, float, int or str}``; the
            flag of ``weight_decay`` is ``--weight-decay``.
        title: the argument group's title in ``--help``.
    """
    group = parser.add_argument_group(title)
    for name, kind in field_types.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, type=parse_bool, default=None, metavar="{true,false}")
        elif kind is tuple:
            group.add_argument(flag, type=parse_int_tuple, default=None, metavar="N[,N...]")
        else:
            group.add_argument(flag, type=finite_float if kind is float else kind,
                               default=None)
