"""Plots the training curves of one run, or overlays several to compare their settings.

    python -m ffl_tf.plot --model_dir=RUN [RUN2 ...] [--output_dir=DIR]

Writes accuracy.png (evaluation top-1 accuracy per head per epoch) and losses.png (each loss part and the
KD weight per epoch, training solid, evaluation dashed) from each run's history.csv. One run: into
RUN/plots/ (as training does at its end) unless --output_dir is given. Several runs: into --output_dir
(required), one colour per run, named by its directory (or its path below the runs' common parent when
two directories share a name), one accuracy panel per head.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import os
import sys

from absl import app, flags

from ffl_tf.inspection import curves
from ffl_tf.runs import run_dir
from ffl_tf.runs.history import read_history

FLAGS = flags.FLAGS


def plot(model_dirs: list[str], output_dir: str | None = None) -> list[str]:
    """Writes the plots of `model_dirs` (overlaid when several); returns the files written.

    Raises ValueError naming a directory without history or a missing --output_dir.
    """
    if len(model_dirs) > 1 and not output_dir:
        raise ValueError(f"{len(model_dirs)} runs are overlaid into one set of plots: pass --output_dir=DIR.")
    runs = {}
    for model_dir in model_dirs:
        path = os.path.join(model_dir, run_dir.HISTORY)
        history = read_history(path) if os.path.isfile(path) else []
        if not history:
            raise ValueError(f"{path} is missing or empty: pass the --model_dir of a run trained for an epoch or more.")
        runs[curves.run_label(model_dir, model_dirs)] = history
    return curves.write_plots(runs, output_dir or os.path.join(model_dirs[0], curves.PLOTS))


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    flags.DEFINE_string("model_dir", None, "Required: a run directory; more runs may follow as arguments.")
    flags.DEFINE_string("output_dir", None, "Where to write the PNGs; default RUN/plots for one run, required for "
                        "several.")
    flags.mark_flags_as_required(["model_dir"])


def main(argv: list[str]) -> None:
    try:
        written = plot([FLAGS.model_dir, *argv[1:]], FLAGS.output_dir)
    except (ValueError, OSError) as error:
        sys.exit(f"ffl_tf.plot: error: {error}")
    print("\n".join(f"Wrote {path}" for path in written))


if __name__ == "__main__":
    define_flags()
    app.run(main)
