"""One writer per version: an export never replaces a version it did not write (issue 21).

A version that exists when the export starts is refused up front
(``validate_request``); one that another export publishes while this one runs
is refused when this one publishes (``staging._move_no_replace``), and this
one then publishes nothing. ``overwrite=True`` (``--overwrite``) replaces.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys

import keras
import pytest

import keras_resnext
from keras_resnext import export as export_lib
from keras_resnext.export import pipeline as pipeline_lib
from keras_resnext.export import saved_model as saved_model_lib

from helpers import FIXTURES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_JSON = os.path.join(FIXTURES, "resnext_tiny.json")
CLI_ARGS = ["--spec-json", SPEC_JSON, "--model-name", "m", "--classes", "10",
            "--input-size", "32", "--formats", "saved_model", "--latency-runs", "1"]


def _tiny(seed):
    from helpers import TINY_SPEC

    keras.utils.set_random_seed(seed)
    return keras_resnext.build(TINY_SPEC, input_shape=(32, 32, 3), classes=10)


def _digests(path):
    """``{relative path: sha256}`` of every file under ``path`` (or of the file)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return {"": hashlib.sha256(f.read()).hexdigest()}
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _staging_left(out_dir):
    return [n for n in os.listdir(out_dir) if n.startswith(".export-")]


def test_version_published_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    write = saved_model_lib.write_saved_model
    published = {}

    def racing(*args, **kwargs):
        # Another export runs start to end while this one is staged.
        write(*args, **kwargs)
        monkeypatch.setattr(saved_model_lib, "write_saved_model", write)
        path = export_lib.export_saved_model(_tiny(5), tmp_path, model_name="m")
        published.update(_digests(path))

    monkeypatch.setattr(saved_model_lib, "write_saved_model", racing)
    with pytest.raises(FileExistsError, match="Another export published") as raised:
        export_lib.export_saved_model(_tiny(0), tmp_path, model_name="m")
    assert raised.value.filename == os.path.join(tmp_path, "m", "1")
    assert "saved_model.pb" in published
    assert _digests(tmp_path / "m" / "1") == published
    assert sorted(os.listdir(tmp_path)) == ["m", "models.config"]


def test_partly_published_export_is_moved_back(tmp_path, monkeypatch):
    convert = pipeline_lib.convert_onnx
    published = {}

    def racing(*args, **kwargs):
        # Another export publishes this version's ONNX file (only) meanwhile.
        monkeypatch.setattr(pipeline_lib, "convert_onnx", convert)
        export_lib.export(_tiny(5), tmp_path, model_name="m", formats=("onnx",),
                          latency_runs=1)
        published.update(_digests(tmp_path / "m-1.onnx"))
        return convert(*args, **kwargs)

    monkeypatch.setattr(pipeline_lib, "convert_onnx", racing)
    with pytest.raises(FileExistsError, match="Another export published"):
        export_lib.export(_tiny(0), tmp_path, model_name="m",
                          formats=("saved_model", "onnx"), latency_runs=1,
                          verify_in_subprocess=False)
    # Its SavedModel was published first, then moved back: all or nothing.
    assert not (tmp_path / "m" / "1").exists()
    assert _digests(tmp_path / "m-1.onnx") == published
    assert not _staging_left(tmp_path)


def _cli():
    spec = importlib.util.spec_from_file_location(
        "export_cli", os.path.join(REPO, "applications", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cli_refuses_an_existing_version_unless_overwrite(tmp_path, capsys):
    cli = _cli()
    out = ["--out", os.fspath(tmp_path)]
    assert cli.main(CLI_ARGS + out) == 0
    version = tmp_path / "m" / "1"
    before, inode = _digests(version), os.stat(version).st_ino
    capsys.readouterr()

    assert cli.main(CLI_ARGS + out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0], err
    assert _digests(version) == before

    assert cli.main(CLI_ARGS + out + ["--overwrite"]) == 0
    # A new directory took the version's place.
    assert os.stat(version).st_ino != inode
    assert "saved_model.pb" in _digests(version)
    assert not _staging_left(tmp_path)


@pytest.mark.slow
def test_two_racing_exports_one_wins(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [REPO, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, os.path.join(REPO, "applications", "export.py"),
               *CLI_ARGS, "--out", os.fspath(tmp_path)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2).strip().splitlines()
    # Refused up front or when publishing, whichever the timing gave.
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "already exists" in err[0] or "Another export published" in err[0], err
    assert "saved_model.pb" in _digests(tmp_path / "m" / "1")
    assert not _staging_left(tmp_path)
