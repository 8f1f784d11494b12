"""Training curves from history.csv, drawn with matplotlib: pure functions from history rows to Figures and PNGs.

    RUN/plots/accuracy.png   evaluation top-1 accuracy per head per epoch (`val_acc_<head>`)
    RUN/plots/losses.png     every loss part and the KD weight w(e) per epoch, training and evaluation

One run: one panel of accuracy with a colour per head. Several runs (to compare settings): a panel per
head with a colour per run. Losses always get a panel per part, training solid and evaluation dashed.
Figures are made with `matplotlib.figure.Figure` (the Agg canvas), never pyplot, so drawing needs no
display and touches no global state.
"""

import math
import os
from collections.abc import Sequence

from absl import logging
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ffl_tf.model import heads
from ffl_tf.runs import run_dir
from ffl_tf.runs.history import History, read_history
from ffl_tf.utils import atomic

PLOTS = "plots"
ACCURACY_PNG = "accuracy.png"
LOSSES_PNG = "losses.png"
# history.csv columns that are not loss parts.
_NOT_LOSSES = ("epoch", "learning_rate", "images_per_second", "disagreement")
_NOT_LOSS_PREFIXES = ("acc_", "ece_")
_TITLES = {"loss": "total loss", "ce_branches": "CE, branches (sum)", "ce_fused": "CE, fused classifier",
           "ce_ensemble": "CE, ensemble", "kd_branches": "KD to the branches", "kd_fused": "KD to the fused classifier",
           "l2": "L2 weight decay", "kd_weight": "KD weight w(e)"}

def accuracy_heads(history: History) -> list[str]:
    """The heads with an evaluation accuracy column, in report order: branches, branch_mean, ensemble, fused."""
    found = {key.removeprefix("val_acc_") for row in history[:1] for key in row if key.startswith("val_acc_")}
    order = [*sorted(heads.branch_heads(found), key=heads.branch_index), heads.BRANCH_MEAN, heads.ENSEMBLE,
             heads.FUSED]
    return [h for h in order if h in found] + sorted(found - set(order))


def loss_parts(history: History) -> list[str]:
    """The loss parts logged in `history` (total loss first, KD weight last)."""
    keys = [key for key in (history[0] if history else {}) if not key.startswith("val_")
            and key not in _NOT_LOSSES and not key.startswith(_NOT_LOSS_PREFIXES)]
    middle = sorted(k for k in keys if k not in ("loss", "kd_weight"))
    return [k for k in ("loss", *middle, "kd_weight") if k in keys]


def _series(history: History, key: str) -> tuple[list[float], list[float]]:
    """(epochs counted from 1, values) of the rows where `key` has a value."""
    points = [(row.get("epoch", i) + 1, row[key]) for i, row in enumerate(history)
              if not math.isnan(row.get(key, math.nan))]
    return [p[0] for p in points], [p[1] for p in points]


def _style_axes(ax, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_figure(runs: dict[str, History]) -> Figure:
    """Evaluation top-1 accuracy per epoch: one run on one panel (a colour per head), several runs on a
    panel per head (a colour per run)."""
    if len(runs) == 1:
        (name, history), = runs.items()
        figure = Figure(figsize=(7.0, 4.2), layout="constrained")
        ax = figure.subplots()
        for head in accuracy_heads(history):
            dashed = head == heads.BRANCH_MEAN
            ax.plot(*_series(history, f"val_acc_{head}"), marker=".", linestyle="--" if dashed else "-",
                    linewidth=2.2 if head in (heads.FUSED, heads.ENSEMBLE) else 1.4, label=head)
        _style_axes(ax, f"Evaluation accuracy: {name}", "top-1 accuracy")
        ax.legend(fontsize=9, loc="lower right")
        return figure
    head_names = list(dict.fromkeys(h for history in runs.values() for h in accuracy_heads(history)))
    figure, axes = _panels(len(head_names), columns=3)
    for ax, head in zip(axes, head_names):
        for colour, (name, history) in enumerate(runs.items()):
            ax.plot(*_series(history, f"val_acc_{head}"), marker=".", color=f"C{colour}", label=name)
        _style_axes(ax, head, "top-1 accuracy (evaluation)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 4),
                  fontsize=9)
    return figure


def losses_figure(runs: dict[str, History]) -> Figure:
    """A panel per loss part (and the KD weight): training solid, evaluation dashed, a colour per run."""
    parts = list(dict.fromkeys(p for history in runs.values() for p in loss_parts(history)))
    figure, axes = _panels(len(parts), columns=4)
    for ax, part in zip(axes, parts):
        for colour, (name, history) in enumerate(runs.items()):
            ax.plot(*_series(history, part), color=f"C{colour}", marker=".", label=f"{name}, training")
            if part != "kd_weight":  # the evaluation's w(e) is the training's at the epoch's end
                ax.plot(*_series(history, f"val_{part}"), color=f"C{colour}", marker=".", linestyle="--",
                        label=f"{name}, evaluation")
        _style_axes(ax, _TITLES.get(part, part), "weight" if part == "kd_weight" else "loss")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(2 * len(runs), 4),
                  fontsize=9)
    return figure


def _panels(count: int, *, columns: int) -> tuple[Figure, list]:
    """A constrained-layout Figure with `count` panels on rows of `columns`; unused cells are hidden."""
    columns = min(columns, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    figure = Figure(figsize=(3.6 * columns, 2.9 * rows + 0.5), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, axes[:count]


def write_png(figure: Figure, path: str, dpi: int = 100) -> str:
    """Saves `figure` as a PNG at `path` (cropped to its content, losslessly compressed), atomically; returns `path`.

    Every picture the library writes goes through here: training plots, Grad-CAM grids, comparison reports.
    """
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pil_kwargs={"optimize": True})
    return path


def write_plots(runs: dict[str, History], output_dir: str) -> list[str]:
    """Writes accuracy.png and losses.png of `runs` ({label: history rows}) into `output_dir`."""
    return [write_png(accuracy_figure(runs), os.path.join(output_dir, ACCURACY_PNG)),
            write_png(losses_figure(runs), os.path.join(output_dir, LOSSES_PNG))]


def run_label(model_dir: str, others: Sequence[str] = ()) -> str:
    """A short name for a run: its directory's name, or its path below the runs' common parent if that clashes."""
    names = [os.path.basename(os.path.normpath(d)) for d in others]
    name = os.path.basename(os.path.normpath(model_dir))
    if names.count(name) <= 1:
        return name
    return os.path.relpath(os.path.abspath(model_dir), os.path.commonpath([os.path.abspath(d) for d in others]))


def write_run_plots(model_dir: str) -> list[str]:
    """RUN/plots/accuracy.png and losses.png from RUN/history.csv; at the end of training, so a plot that
    cannot be drawn or written only logs a warning instead of failing the finished run."""
    path = os.path.join(model_dir, run_dir.HISTORY)
    try:
        history = read_history(path)
        return write_plots({run_label(model_dir): history}, os.path.join(model_dir, PLOTS)) if history else []
    except (OSError, ValueError) as error:
        logging.warning("Could not write the training plots of %s: %s", model_dir, error)
        return []
