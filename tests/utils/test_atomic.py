"""Atomic writes leave the old content or the complete new one, and no temporary files."""

import json
import os

import pytest

from ffl_tf.utils import atomic


def test_file_is_replaced_only_when_the_write_succeeds(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(str(path), {"a": 1})
    with pytest.raises(RuntimeError), atomic.atomic_path(str(path)) as tmp, open(tmp, "w") as f:
        f.write('{"a": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_temporary_name_keeps_the_extension(tmp_path):
    with atomic.atomic_path(str(tmp_path / "epoch-0001.weights.h5")) as tmp:
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()
    assert os.listdir(tmp_path) == ["epoch-0001.weights.h5"]


def test_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "1"
    with pytest.raises(OSError), atomic.atomic_path(str(target), is_dir=True) as tmp:
        (tmp_path / tmp / "saved_model.pb").write_text("half")
        raise OSError("disk full")
    assert os.listdir(tmp_path) == []
    with atomic.atomic_path(str(target), is_dir=True) as tmp:
        (tmp_path / tmp / "saved_model.pb").write_text("whole")
    assert (target / "saved_model.pb").read_text() == "whole"
    assert os.listdir(tmp_path) == ["1"]


def test_write_text_creates_parent_directories(tmp_path):
    atomic.write_text(str(tmp_path / "a" / "flags.txt"), "--epochs=1\n")
    assert (tmp_path / "a" / "flags.txt").read_text() == "--epochs=1\n"


def test_results_get_the_usual_permissions(tmp_path):
    atomic.write_text(str(tmp_path / "flags.txt"), "")
    with atomic.atomic_path(str(tmp_path / "1"), is_dir=True):
        pass
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "flags.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "1").stat().st_mode & 0o777 == 0o777 & ~mask
