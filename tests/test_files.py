"""Atomic writes leave either the old file or the whole new one."""

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
