"""How a command's process starts: quiet, then the command. Imports nothing heavy (no TensorFlow) itself.

Every command (`python -m ffl_tf.train`, the `ffl-train` console command, ...) calls `prepare(__name__)`
first thing, before it imports TensorFlow; as a library import (`__name__` is then the module's own name)
it does nothing, so importing ffl_tf never touches a program's stderr, environment or logging. In a command's
own process it hides TensorFlow's C++ start-up chatter and other libraries' INFO lines
(`ffl_tf.utils.console`): `--verbosity=1` (absl's `-v 1`) or FFL_TF_VERBOSE=1 shows everything.

The console commands installed with the package (pyproject.toml) are the functions below: each runs its
command module as `__main__`, exactly as `python -m` does, so flags, `--help` and exit statuses are the same.

The flagfiles shipped with the package (configs/ in a checkout, ffl_tf/configs/ once installed) are reachable by
name in the commands that train: `--config=cifar10` (or `--config cifar10`) becomes
`--flagfile=<path of cifar10.flags>` before absl parses the command line (`expand_config`); `--flagfile=PATH`
still reads any flagfile of yours.
"""

import os
import pathlib
import runpy
import sys

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
CONFIG_FLAG = "--config"
CONFIG_SUFFIX = ".flags"
_prepared = False


def prepare(module_name: str, *, show_info: bool = False, configs: bool = False) -> None:
    """Sets up a command's process when `module_name` is "__main__"; does nothing for a library import.

    TensorFlow starts quietly once per process; a later call (the command's own, after `run_module`'s) only
    sets what its command shows.

    Args:
        module_name: the calling module's `__name__`.
        show_info: show this project's INFO log lines (a run's progress); otherwise only warnings and errors.
        configs: the command takes `--config=NAME`, a shipped flagfile by name (`expand_config` on sys.argv).
    """
    global _prepared
    if module_name != "__main__":
        return
    if configs:
        sys.argv[1:] = expand_config(sys.argv[1:])
    from ffl_tf.utils import console

    show_all = console.verbose_requested()
    if not _prepared:
        _prepared = True
        if not show_all:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before TensorFlow loads
        with console.filtered_stderr(show_all=show_all):
            import tensorflow as tf

            tf.config.list_physical_devices()  # initialises the device platforms, whose probes log too
    console.quiet_logging(show_all=show_all, show_info=show_info)


def configs_dir() -> pathlib.Path:
    """The shipped flagfiles: ffl_tf/configs/ in an installed package, the checkout's configs/ otherwise."""
    package = pathlib.Path(__file__).resolve().parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> dict[str, pathlib.Path]:
    """{name: path} of the shipped flagfiles (`cifar10` -> .../cifar10.flags)."""
    directory = configs_dir()
    paths = sorted(directory.glob(f"*{CONFIG_SUFFIX}")) if directory.is_dir() else []
    return {path.name.removesuffix(CONFIG_SUFFIX): path for path in paths}


def expand_config(args: list[str]) -> list[str]:
    """`args` with every `--config=NAME` (or `--config NAME`) replaced by `--flagfile=<the shipped NAME.flags>`;
    exits with a one-line error naming the shipped configs for an unknown NAME."""
    expanded, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":  # absl stops parsing flags here
            return [*expanded, arg, *rest]
        if arg == CONFIG_FLAG:
            arg = f"{CONFIG_FLAG}={rest.pop(0) if rest else ''}"
        if arg.startswith(f"{CONFIG_FLAG}="):
            arg = f"--flagfile={_config_path(arg.partition('=')[2])}"
        expanded.append(arg)
    return expanded


def _config_path(name: str) -> pathlib.Path:
    known = shipped_configs()
    if name.removesuffix(CONFIG_SUFFIX) not in known:
        sys.exit(f"{_program()}: error: {CONFIG_FLAG}={name} is not a shipped config; choose one of: "
                 f"{', '.join(known)} (in {configs_dir()}), or pass a flagfile of your own with --flagfile=PATH.")
    return known[name.removesuffix(CONFIG_SUFFIX)]


def _program() -> str:
    """The command's name for messages: `ffl_tf.train` for `python -m ffl_tf.train`, `ffl-train` for the console
    command."""
    path = pathlib.Path(sys.argv[0])
    if path.suffix != ".py":
        return path.name
    parts = path.with_suffix("").parts
    return ".".join(parts[parts.index("ffl_tf"):]) if "ffl_tf" in parts else path.stem


def run_module(module: str) -> None:
    """Runs `module` as `python -m module` would, after `prepare` (the module's own `prepare` call then sets what
    it shows and expands `--config`)."""
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
