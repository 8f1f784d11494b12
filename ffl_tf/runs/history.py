"""A run's history.csv (one row of metrics per epoch, written by Keras's CSVLogger): read, and trimmed on resume."""

import csv
import math
import os

from ffl_tf.utils import atomic

History = list[dict[str, float]]


def read_history(path: str) -> History:
    """history.csv's rows as {column: float}; empty and non-numeric cells (Keras writes NA) become NaN."""
    with open(path, newline="") as f:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _number(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def trim_history(path: str, initial_epoch: int) -> None:
    """Drops history.csv rows of epochs a resumed run will redo (logged before a kill, never checkpointed)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.read().splitlines()
    if lines:
        kept = [row for row in lines[1:] if int(row.split(",", 1)[0]) < initial_epoch]
        atomic.write_text(path, "".join(f"{line}\n" for line in [lines[0], *kept]))
