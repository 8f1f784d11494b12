"""A quiet console for the commands: TensorFlow's and tfds's chatter is hidden unless asked for; warnings show.

TensorFlow's C++ runtime writes INFO lines (oneDNN, CUDA drivers, CPU features) straight to file
descriptor 2 while it is imported and its devices are listed, before `TF_CPP_MIN_LOG_LEVEL` applies, and
tfds logs INFO lines through absl. Neither helps a user start a run. Pass absl's `--verbosity=1` (`-v 1`)
or set FFL_TF_VERBOSE=1 to see everything.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# C++ log lines: a severity letter, a date and a source location ("I0000 00:00:17.. 4011 port.cc:153] ...").
_CPP_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ (\S+):\d+\]")
# Start-up lines that are noise on every machine: absl's notice, and the CUDA probe on a machine without GPU.
_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog|cuda_platform\.cc.*failed call to cuInit|"
    r"^To enable the following instructions"
)
# Our own packages: their INFO lines are the run's progress and always show.
_OWN_PACKAGES = (f"{os.sep}ffl_tf{os.sep}", f"{os.sep}benchmarks{os.sep}")


def verbose_requested(argv: list[str] | None = None) -> bool:
    """Whether the command line asks for absl's verbose logging (-v / --verbosity) or FFL_TF_VERBOSE is set."""
    argv = sys.argv if argv is None else argv
    return bool(os.environ.get("FFL_TF_VERBOSE")) or any(
        arg.startswith(("--verbosity", "-v")) and not arg.startswith("--verbose") for arg in argv[1:]
    )


def is_chatter(line: str) -> bool:
    """True for a start-up line nobody needs: C++ INFO lines and the known harmless notices."""
    match = _CPP_LINE.match(line)
    return bool(_CHATTER.search(line)) or bool(match and match.group(1) == "I")


@contextlib.contextmanager
def filtered_stderr(show_all: bool) -> Iterator[None]:
    """Captures what C++ code writes to file descriptor 2 and replays it without the chatter lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if show_all or not is_chatter(line):
                    print(line, file=sys.stderr)


class _OwnInfoOnly(logging.Filter):
    """Lets through warnings and errors, and INFO records of this project's own code only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(p in record.pathname for p in _OWN_PACKAGES)


def quiet_logging(*, show_all: bool, show_info: bool) -> None:
    """A command's logging: everything with `show_all`; otherwise warnings and errors, plus this project's own
    INFO lines with `show_info` (never other libraries' INFO lines, such as tfds's "Load dataset info"), and
    no tfds progress bars."""
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    for existing in [f for f in handler.filters if isinstance(f, _OwnInfoOnly)]:
        handler.removeFilter(existing)
    if show_all:
        return
    handler.addFilter(_OwnInfoOnly())
    absl_logging.set_verbosity(absl_logging.INFO if show_info else absl_logging.WARNING)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
