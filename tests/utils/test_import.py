"""Importing ffl_tf changes nothing in the importing program: every module of it, imported after a plain
`import tensorflow, keras`, leaves the environment variables, the open file descriptors (fd 2's target too), the
root logger's handlers and level, and absl's handler, filters and verbosity as that plain import left them. The
commands set up their own process (`ffl_tf.launcher`), only when run as commands."""

import json
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Prints the process's state after the plain import, then after importing every ffl_tf module.
SCRIPT = """
import importlib, json, logging, os, pkgutil, sys
import tensorflow, keras
from absl import logging as absl_logging

def state():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory listing's own descriptor, closed by now
            pass
    def handlers(name):
        logger = logging.getLogger(name)
        return [repr(h) for h in logger.handlers], logger.level, logger.propagate
    absl_handler = absl_logging.get_absl_handler()
    return {"environ": dict(os.environ), "fds": fds, "root": handlers(None), "absl": handlers("absl"),
            "tensorflow": handlers("tensorflow"), "absl_verbosity": absl_logging.get_verbosity(),
            "absl_filters": [repr(f) for f in absl_handler.filters], "absl_level": absl_handler.level}

before = state()
import ffl_tf
modules = sorted(m.name for m in pkgutil.walk_packages(ffl_tf.__path__, "ffl_tf."))
for name in modules:
    importlib.import_module(name)
print(json.dumps({"before": before, "after": state(), "modules": modules}))
"""


def test_importing_every_module_changes_no_environment_descriptor_or_logging_setting():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    # Every kind of module is imported: the commands, the launcher, the QAT export (tfmot) among them.
    assert {"ffl_tf.train", "ffl_tf.compare", "ffl_tf.launcher", "ffl_tf.saving", "ffl_tf.export.qat",
            "ffl_tf.export.tflite"} <= set(report["modules"])
    before, after = report["before"], report["after"]
    changed = {name: value for name, value in after["environ"].items() if before["environ"].get(name) != value}
    removed = set(before["environ"]) - set(after["environ"])
    assert changed == {} and removed == set()
    assert after["fds"] == before["fds"]
    for setting in ("root", "absl", "tensorflow", "absl_verbosity", "absl_filters", "absl_level"):
        assert after[setting] == before[setting], setting


def test_the_package_and_its_launcher_import_nothing_heavy():
    """The console commands start in the launcher, which must set the process up before TensorFlow loads."""
    script = "import sys, ffl_tf, ffl_tf.launcher; print(sorted({'tensorflow', 'keras', 'absl'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
