"""Atomic writes leave either the old file or the whole new one."""

import errno
import os
import stat

import pytest

from keras_resnext import files


def test_atomic_write_replaces_whole_file_with_readable_permissions(tmp_path):
    path = tmp_path / "sub" / "report.json"
    files.atomic_write_text(str(path), "first")
    files.atomic_write_text(str(path), "second")
    assert path.read_text() == "second"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["report.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with files.atomic_path(str(path), suffix=".weights.h5") as tmp:
            assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.weights.h5"]


def test_output_directory_checks_create_nothing(tmp_path):
    files.check_writable_dir(str(tmp_path / "new" / "run"), name="model_dir")
    assert os.listdir(tmp_path) == []
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"`model_dir` must be a directory.*a_file.*is a file"):
        files.check_writable_dir(str(tmp_path / "a_file" / "run"), name="model_dir")


def test_failed_writes_name_the_file(tmp_path):
    with pytest.raises(OSError, match=r"Cannot write w\.weights\.h5 \(No space left"):
        with files.writing("w.weights.h5", str(tmp_path / "w.weights.h5")):
            raise OSError(errno.ENOSPC, "h5py's long message")
    with pytest.raises(OSError) as info:
        files.check_space(str(tmp_path / "big.bin"), 1 << 62)
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("big.bin")
    assert os.listdir(tmp_path) == []
