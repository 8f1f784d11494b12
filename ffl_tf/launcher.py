"""How a command's process starts: quiet, then the command. Imports nothing heavy (no TensorFlow) itself.

Every command (`python -m ffl_tf.train`, the `ffl-train` console command, ...) calls `prepare(__name__)`
first thing, before it imports TensorFlow; as a library import (`__name__` is then the module's own name)
it does nothing, so importing ffl_tf never touches a program's stderr, environment or logging. In a command's
own process it hides TensorFlow's C++ start-up chatter and other libraries' INFO lines
(`ffl_tf.utils.console`): `--verbosity=1` (absl's `-v 1`) or FFL_TF_VERBOSE=1 shows everything.

The console commands installed with the package (pyproject.toml) are the functions below: each runs its
command module as `__main__`, exactly as `python -m` does, so flags, `--help` and exit statuses are the same.
"""

import os
import runpy

# Console command -> the module it runs (as `python -m <module>`).
COMMANDS = {
    "ffl-train": "ffl_tf.train",
    "ffl-compare": "ffl_tf.compare",
    "ffl-evaluate": "ffl_tf.evaluate",
    "ffl-predict": "ffl_tf.predict",
    "ffl-gradcam": "ffl_tf.gradcam",
    "ffl-plot": "ffl_tf.plot",
    "ffl-export-saved-model": "ffl_tf.export.saved_model",
    "ffl-export-tflite": "ffl_tf.export.tflite",
}
_prepared = False


def prepare(module_name: str, *, show_info: bool = False) -> None:
    """Sets up a command's process when `module_name` is "__main__"; does nothing for a library import.

    Args:
        module_name: the calling module's `__name__`.
        show_info: show this project's INFO log lines (a run's progress); otherwise only warnings and errors.
    """
    global _prepared
    if module_name != "__main__" or _prepared:
        return
    _prepared = True
    from ffl_tf.utils import console

    show_all = console.verbose_requested()
    if not show_all:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before TensorFlow loads
    with console.filtered_stderr(show_all=show_all):
        import tensorflow as tf

        tf.config.list_physical_devices()  # initialises the device platforms, whose probes log too
    console.quiet_logging(show_all=show_all, show_info=show_info)


def run_module(module: str) -> None:
    """Runs `module` as `python -m module` would, after `prepare`."""
    prepare("__main__")
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _command(name: str):
    def run() -> None:
        run_module(COMMANDS[name])

    run.__name__ = run.__qualname__ = name.replace("-", "_")
    run.__doc__ = f"The `{name}` console command: `python -m {COMMANDS[name]}`."
    return run


train = _command("ffl-train")
compare = _command("ffl-compare")
evaluate = _command("ffl-evaluate")
predict = _command("ffl-predict")
gradcam = _command("ffl-gradcam")
plot = _command("ffl-plot")
export_saved_model = _command("ffl-export-saved-model")
export_tflite = _command("ffl-export-tflite")
