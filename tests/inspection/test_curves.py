"""Training plots: accuracy and losses from history.csv, for one run and overlaid runs, and the plot command."""

import csv
import pathlib

import numpy as np
import pytest

from ffl_tf import plot
from ffl_tf.inspection import curves
from ffl_tf.runs import run_dir
from tests.inspection.helpers import read_png, run_module

HEADS = ["branch_0", "branch_1", "branch_mean", "ensemble", "fused"]
PARTS = ["loss", "ce_branches", "ce_fused", "kd_branches", "kd_fused", "l2", "kd_weight"]


def write_history(model_dir: pathlib.Path, epochs: int, *, offset: float = 0.0, evaluated_every: int = 1) -> None:
    """A history.csv as Keras's CSVLogger writes it (sorted columns, NA where an epoch was not evaluated)."""
    rows = []
    for epoch in range(epochs):
        row = {"epoch": epoch, "learning_rate": 0.1, "images_per_second": 100.0}
        row.update({f"acc_{h}": 0.1 + 0.05 * epoch + offset for h in HEADS})
        row.update({part: 2.0 / (epoch + 1) + offset for part in PARTS})
        row["kd_weight"] = min(1.0, (epoch + 1) / 3)
        evaluated = (epoch + 1) % evaluated_every == 0
        for key in [*(f"acc_{h}" for h in HEADS), *PARTS, "ece_fused", "disagreement"]:
            row[f"val_{key}"] = row.get(key, 0.05) - 0.01 if evaluated else "NA"
        rows.append(row)
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / run_dir.HISTORY, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", *sorted(k for k in rows[0] if k != "epoch")])
        writer.writeheader()
        writer.writerows(rows)


def test_history_columns_are_read_and_sorted_into_heads_and_loss_parts(tmp_path):
    write_history(tmp_path, 4, evaluated_every=2)
    history = curves.read_history(str(tmp_path / run_dir.HISTORY))
    assert len(history) == 4 and np.isnan(history[0]["val_acc_fused"]) and history[1]["val_acc_fused"] > 0
    assert curves.accuracy_heads(history) == HEADS
    assert curves.loss_parts(history) == ["loss", "ce_branches", "ce_fused", "kd_branches", "kd_fused", "l2",
                                         "kd_weight"]


def test_a_runs_plots_are_written_and_not_blank(tmp_path):
    write_history(tmp_path / "run", 5, evaluated_every=2)
    written = curves.write_run_plots(str(tmp_path / "run"))
    assert [pathlib.Path(p).name for p in written] == ["accuracy.png", "losses.png"]
    for path in written:
        pixels = read_png(pathlib.Path(path))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.astype(float).var() > 0
    figure = curves.accuracy_figure({"run": curves.read_history(str(tmp_path / "run" / run_dir.HISTORY))})
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.get_lines()] == HEADS
    assert list(ax.get_lines()[0].get_xdata()) == [2, 4]  # epochs counted from 1; unevaluated epochs left out


def test_plots_of_a_run_without_history_are_skipped_with_a_warning(tmp_path):
    assert curves.write_run_plots(str(tmp_path)) == []


def test_the_plot_command_overlays_two_runs(tmp_path):
    write_history(tmp_path / "a" / "run", 3)
    write_history(tmp_path / "b" / "run", 4, offset=0.1)
    runs = [tmp_path / "a" / "run", tmp_path / "b" / "run"]
    result = run_module("ffl_tf.plot", f"--model_dir={runs[0]}", runs[1], f"--output_dir={tmp_path / 'compare'}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("accuracy.png", "losses.png"):
        assert read_png(tmp_path / "compare" / name).astype(float).var() > 0
    histories = {curves.run_label(str(d), list(map(str, runs))): curves.read_history(str(d / run_dir.HISTORY))
                 for d in runs}
    assert list(histories) == ["a/run", "b/run"]  # same directory names: told apart by their paths
    figure = curves.accuracy_figure(histories)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == HEADS  # one panel per head...
    assert all([line.get_label() for line in ax.get_lines()] == ["a/run", "b/run"] for ax in visible)  # a line per run
    with pytest.raises(ValueError, match="pass --output_dir"):
        plot.plot([str(d) for d in runs])
    with pytest.raises(ValueError, match="history.csv is missing or empty"):
        plot.plot([str(tmp_path / "nowhere")])
