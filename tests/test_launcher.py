"""The launcher's `--config=NAME`: a shipped flagfile by name, rewritten into `--flagfile=PATH` before absl parses;
an unknown name fails in one line naming the known ones. The shipped flagfiles work from any directory."""

import pathlib
import re
import sys

import pytest

from ffl_tf import launcher
from ffl_tf.utils import console

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_config_names_are_the_flagfiles_of_configs():
    """In a checkout the shipped flagfiles are configs/ (installed: ffl_tf/configs/, tests/test_packaging.py)."""
    assert launcher.configs_dir() == REPO_ROOT / "configs"
    shipped = launcher.shipped_configs()
    assert shipped == {path.stem: path for path in (REPO_ROOT / "configs").glob("*.flags")}
    assert {"quickstart", "cifar10", "compare_cifar10_sample"} <= set(shipped)


def test_config_flags_become_flagfiles_in_place():
    path = REPO_ROOT / "configs"
    args = ["--config=cifar10", "--epochs=2", "--config", "quickstart.flags", "--flagfile=mine.flags", "--",
            "--config=not_a_flag_here"]
    assert launcher.expand_config(args) == [
        f"--flagfile={path / 'cifar10.flags'}", "--epochs=2", f"--flagfile={path / 'quickstart.flags'}",
        "--flagfile=mine.flags", "--", "--config=not_a_flag_here",
    ]
    assert launcher.expand_config(["--configuration=x", "--epochs=1"]) == ["--configuration=x", "--epochs=1"]


def test_an_unknown_config_fails_in_one_line_naming_the_known_ones():
    with pytest.raises(SystemExit) as stopped:
        launcher.expand_config(["--config=cifar11"])
    message = str(stopped.value.code)
    assert "\n" not in message
    assert ": error: --config=cifar11 is not a shipped config; choose one of: cifar10, cifar100, " in message
    assert "quickstart" in message and message.endswith("or pass a flagfile of your own with --flagfile=PATH.")
    with pytest.raises(SystemExit, match="error: --config= is not a shipped config; choose one of: cifar10"):
        launcher.expand_config(["--epochs=1", "--config"])


def test_prepare_expands_configs_and_the_commands_own_call_sets_what_it_shows(monkeypatch):
    """`run_module` prepares the process first (quietly), then the command's own `prepare` call, which shows its
    INFO lines (train's progress) and expands --config."""
    monkeypatch.setattr(launcher, "_prepared", True)  # TensorFlow's quiet start is not what is tested here
    shown = []
    monkeypatch.setattr(console, "quiet_logging", lambda **settings: shown.append(settings["show_info"]))
    monkeypatch.setattr(sys, "argv", ["ffl-train", "--config=quickstart"])
    launcher.prepare("ffl_tf.train", show_info=True, configs=True)  # a library import: nothing happens
    launcher.prepare("__main__")  # run_module's call
    assert sys.argv == ["ffl-train", "--config=quickstart"] and shown == [False]
    launcher.prepare("__main__", show_info=True, configs=True)  # the command's own
    assert sys.argv == ["ffl-train", f"--flagfile={REPO_ROOT / 'configs' / 'quickstart.flags'}"]
    assert shown == [False, True]


def test_shipped_flagfiles_name_no_other_file_so_they_work_from_any_directory():
    for path in launcher.shipped_configs().values():
        lines = [line.strip() for line in path.read_text().splitlines() if not line.strip().startswith("#")]
        assert not [line for line in lines if re.match(r"--(flagfile|config)\b", line)], path.name
