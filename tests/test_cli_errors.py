"""Every program on bad input, run as a user runs it (a subprocess, TensorFlow's
log level unset): a non-zero exit code, exactly one line on stderr that names
the bad value or path, no traceback, and nothing written.

The full-disk cases use a 3 MiB tmpfs when this process may mount one (root),
else a file size limit (``RLIMIT_FSIZE``: writes fail with ``EFBIG``); the
read-only case a read-only tmpfs (root) or a ``chmod 555`` folder.
"""

import contextlib
import errno
import json
import os
import resource
import runpy
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
FIT = os.path.join(ROOT, "training", "fit.py")
EVALUATE = os.path.join(ROOT, "training", "evaluate.py")
EXPORT = os.path.join(ROOT, "applications", "export.py")
CLASSIFY = os.path.join(ROOT, "applications", "classify.py")
BENCHMARK = os.path.join(ROOT, "applications", "benchmark.py")
TINY_JSON = os.path.join(FIXTURES, "resnext_tiny.json")
TINY_EXPORT = ["--spec-json", TINY_JSON, "--model-name", "tiny", "--classes", "10",
               "--input-size", "32", "--formats", "saved_model", "--latency-runs", "1"]
QUICK_FIT = ["--strategy", "default", "--verbose", "0", "--no-export"]


@pytest.fixture
def env(tmp_path):
    """The environment of a user without a GPU and without network."""
    out = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"),
               KERAS_RESNEXT_CACHE=str(tmp_path / "converted"), CUDA_VISIBLE_DEVICES="")
    return out


def run(env, script, *args, preexec_fn=None):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec_fn)


def error_line(proc, code=None):
    """The one line on stderr of a failed run (checks the contract on the way)."""
    assert proc.returncode > 0, (proc.returncode, proc.stderr[-3000:])
    if code is not None:
        assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def tree(path):
    """``{relative path: bytes}`` of every file under ``path`` (folders as None)."""
    out = {}
    for directory, dirs, names in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(directory, name), path)] = None
        for name in names:
            full = os.path.join(directory, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


@contextlib.contextmanager
def tmpfs(path, options):
    """Mounts a tmpfs at ``path``; yields whether it could (root only)."""
    os.makedirs(path, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def file_size_limit(limit):
    """``preexec_fn`` of a process whose files cannot grow past ``limit`` bytes."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# --------------------------------------------------------------------------- fit.py


def test_fit_model_dir_that_is_a_file(tmp_path, env):
    path = tmp_path / "a_file"
    path.write_text("mine")
    line = error_line(run(env, FIT, "--model-dir", path, *QUICK_FIT), code=2)
    assert str(path) in line and "is a file" in line
    assert path.read_text() == "mine"


def test_fit_read_only_model_dir(tmp_path, env):
    parent = tmp_path / "read_only"
    with tmpfs(parent, "ro,size=1m") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root ignores permissions and cannot mount a read-only tmpfs")
            os.chmod(parent, 0o555)
        line = error_line(run(env, FIT, "--model-dir", parent / "run", *QUICK_FIT), code=2)
        assert str(parent) in line and "run" in line
        assert not os.path.exists(parent / "run")


def test_fit_full_disk_stops_cleanly_and_leaves_no_partial_checkpoint(tmp_path, env):
    disk = tmp_path / "disk"
    with tmpfs(disk, "size=3m") as mounted:
        # Without a tmpfs, a file size limit: the first checkpoint (about 0.8 MB) fails.
        limit = None if mounted else file_size_limit(600_000)
        proc = run(env, FIT, "--model-dir", disk / "run", *QUICK_FIT, "--checkpoint-steps", "1",
                   "--steps-per-epoch", "6", "--epochs", "1", preexec_fn=limit)
        line = error_line(proc, code=1)
        reason = os.strerror(errno.ENOSPC if mounted else errno.EFBIG)
        assert f"Cannot write checkpoint ckpt-" in line and reason in line
        assert str(disk / "run" / "checkpoints") in line
        names = list(tree(disk / "run"))
        assert not [n for n in names if "_temp" in n or ".tmp-" in n], names
        checkpoints = disk / "run" / "checkpoints"
        for name in os.listdir(checkpoints):
            if name.endswith(".index"):  # every listed checkpoint is whole
                assert os.path.exists(checkpoints / name.replace(
                    ".index", ".data-00000-of-00001"))


def test_fit_corrupt_weights_name_the_file_and_create_no_model_dir(tmp_path, env):
    weights = tmp_path / "corrupt.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    line = error_line(run(env, FIT, "--model-dir", tmp_path / "run", "--weights", weights,
                          *QUICK_FIT), code=2)
    assert str(weights) in line and "corrupt" in line
    assert not os.path.exists(tmp_path / "run")


def test_fit_imagenet_weights_offline_create_no_model_dir(tmp_path, env):
    line = error_line(run(env, FIT, "--model-dir", tmp_path / "run", "--weights", "imagenet",
                          "--model", "resnext50_32x4d", *QUICK_FIT), code=2)
    assert "HF_HUB_OFFLINE" in line and "resnext50_32x4d" in line
    assert not os.path.exists(tmp_path / "run")


def test_fit_refuses_a_non_finite_learning_rate(tmp_path, env):
    line = error_line(run(env, FIT, "--model-dir", tmp_path / "run", "--lr", "inf",
                          *QUICK_FIT), code=2)
    assert "--lr" in line and "'inf'" in line and "finite" in line
    assert not os.path.exists(tmp_path / "run")


def test_every_float_option_refuses_nan_and_inf(capsys):
    from keras_resnext.training import recipes

    fit = runpy.run_path(FIT)
    flags = ["--" + name.replace("_", "-")
             for name, kind in recipes.recipe_flag_types().items() if kind is float]
    assert "--lr" in flags and "--weight-decay" in flags
    evaluate = runpy.run_path(EVALUATE)
    classify = runpy.run_path(CLASSIFY)
    programs = [(fit["parse_args"], [], flag) for flag in flags] + [
        (lambda argv: evaluate["run"](argv), ["--model", "m", "--weights", "w"], "--crop-pct"),
        (classify["parse_args"], ["image.jpg"], "--crop-pct")]
    for parse, required, flag in programs:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(SystemExit) as exit_info:
                parse([*required, f"{flag}={value}"])
            assert exit_info.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"argument {flag}: must be a finite number" in err[0]
            assert repr(value) in err[0]


# --------------------------------------------------------------------------- evaluate.py


def test_evaluate_corrupt_weights_name_the_file(tmp_path, env):
    weights = tmp_path / "corrupt.weights.h5"
    weights.write_bytes(os.urandom(4096))
    line = error_line(run(env, EVALUATE, "--model", "resnext11_4x4d", "--weights", weights,
                          "--dataset", "digits"), code=2)
    assert str(weights) in line and "Cannot load the Keras weights file" in line


def test_evaluate_output_in_a_missing_folder_fails_before_the_work(tmp_path, env):
    weights = tmp_path / "any.weights.h5"
    weights.write_bytes(b"not read: the output is checked first")
    before = tree(tmp_path)
    proc = run(env, EVALUATE, "--model", "resnext11_4x4d", "--weights", weights,
               "--dataset", "digits", "--output", tmp_path / "missing_dir" / "r.json")
    line = error_line(proc, code=2)
    assert "--output" in line and str(tmp_path / "missing_dir") in line
    assert proc.stdout == "" and tree(tmp_path) == before


# --------------------------------------------------------------------------- export.py


@pytest.mark.parametrize("case", ["missing_spec", "cardinality_0", "missing_class_names"])
def test_export_bad_input_files(tmp_path, env, case):
    spec = json.load(open(TINY_JSON, encoding="utf-8"))
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps(dict(spec, cardinality=0)))
    args, needles = {
        "missing_spec": (["--spec-json", tmp_path / "missing.json", "--model-name", "x"],
                         ["--spec-json", str(tmp_path / "missing.json"), "No such file"]),
        "cardinality_0": (["--spec-json", zero, "--model-name", "x"],
                          [str(zero), "cardinality=0"]),
        "missing_class_names": ([*TINY_EXPORT, "--class-names", tmp_path / "missing.txt"],
                                ["--class-names", str(tmp_path / "missing.txt")]),
    }[case]
    line = error_line(run(env, EXPORT, *args, "--out", tmp_path / "out"), code=2)
    for needle in needles:
        assert needle in line
    assert not os.path.exists(tmp_path / "out")


def test_export_full_disk_names_the_folder_and_leaves_nothing(tmp_path, env):
    disk = tmp_path / "disk"
    with tmpfs(disk, "size=3m") as mounted:
        limit = None
        if mounted:
            with open(disk / "filler", "wb") as f:  # leave about 100 KiB
                f.write(b"\0" * (3 * 1024 * 1024 - 100 * 1024))
        else:
            limit = file_size_limit(50_000)
        line = error_line(run(env, EXPORT, *TINY_EXPORT, "--out", disk / "out",
                              preexec_fn=limit), code=1)
        reason = os.strerror(errno.ENOSPC if mounted else errno.EFBIG)
        assert f"Cannot write the export ({reason})" in line and str(disk / "out") in line
        assert not os.path.exists(disk / "out")


def _children(pid):
    """PIDs of the live child processes of ``pid`` (Linux ``/proc``)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == pid and _alive(int(entry)):
                out.append(int(entry))
    return out


def _alive(pid):
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _stat(pid):
    """``(state, parent pid)`` of process ``pid``, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_export_leaves_no_process_and_its_staging_is_removed_next_time(
        tmp_path, env):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, EXPORT, *TINY_EXPORT, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        children = []
        while not children:  # the SavedModel is written and being verified
            assert proc.poll() is None, "the export ended before its verification"
            assert time.monotonic() < deadline
            children = _children(proc.pid)
            time.sleep(0.05)
        staging = [n for n in os.listdir(out) if n.startswith(".export-")]
        # python -c SCRIPT saved_model in.npz out.npz parent_pid: out.npz is its result.
        with open(f"/proc/{children[0]}/cmdline", "rb") as f:
            result = f.read().split(b"\0")[5].decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert staging and os.path.isdir(out / staging[0])
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "the verification process outlived the export"
        time.sleep(0.05)
    try:  # killed with the export, not finished on its own
        assert not os.path.exists(result), "the verification ran on after the export died"
    finally:
        shutil.rmtree(os.path.dirname(result), ignore_errors=True)

    import keras_resnext
    from keras_resnext import export as export_lib

    from helpers import TINY_SPEC

    model = keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=4)
    export_lib.export_saved_model(model, out, model_name="next")
    assert sorted(os.listdir(out)) == ["models.config", "next"]


def test_only_the_staging_of_dead_exports_of_this_host_is_removed(tmp_path):
    from keras_resnext.export import staging

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    names = {
        "mine": staging._owner_prefix() + "a",
        "dead": f".export-{staging._host()}-{dead_pid}-0-b",
        "dead_text_file": f".export-{staging._host()}-{dead_pid}-0-c.json",
        "other_host": f".export-elsewhere-{dead_pid}-0-d",
        "unowned": ".export-e",
    }
    for key, name in names.items():
        if key == "dead_text_file":
            (tmp_path / name).write_text("half")
        else:
            (tmp_path / name).mkdir()
    assert staging.remove_stale_staging(str(tmp_path)) == sorted(
        [names["dead"], names["dead_text_file"]])
    assert sorted(os.listdir(tmp_path)) == sorted(
        [names["mine"], names["other_host"], names["unowned"]])


# ------------------------------------------------------------------ classify.py, benchmark.py


def test_classify_corrupt_weights_name_the_file(tmp_path, env):
    weights = tmp_path / "corrupt.weights.h5"
    weights.write_bytes(b"")
    image = os.path.join(FIXTURES, "resnext_tiny.json")  # never read
    line = error_line(run(env, CLASSIFY, image, "--model", "tiny", "--spec", TINY_JSON,
                          "--weights", weights), code=2)
    assert str(weights) in line and "'tiny'" in line


def test_benchmark_output_folder_under_a_file(tmp_path, env):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    line = error_line(run(env, BENCHMARK, "--out", blocker / "results"), code=2)
    assert "--out" in line and str(blocker) in line
    assert tree(tmp_path) == {"a_file": b"mine"}


# --------------------------------------------------------------------------- --verbose


def test_verbose_shows_the_traceback(tmp_path, env):
    path = tmp_path / "a_file"
    path.write_text("mine")
    proc = run(env, FIT, "--model-dir", path, *QUICK_FIT[:-3], "--verbose")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: `model_dir` must be")
