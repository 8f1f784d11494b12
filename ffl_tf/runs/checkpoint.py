"""Training checkpoints (weights and optimizer state), written atomically, read back with a fallback.

A checkpoint's position is (epochs done, steps done in the next epoch):

    epoch-0004.weights.h5              after 4 epochs
    epoch-0004-step-000120.weights.h5  after 4 epochs and 120 steps of the fifth (mid-epoch or preemption)

A checkpoint that cannot be read (truncated by an interrupted copy, say) is named in a warning, moved
aside as `<name>.corrupt` (never deleted) and the next newest one is used instead.
"""

import os
import re

import keras
from absl import logging

from ffl_tf.utils import atomic, keras_compat

_PATTERN = re.compile(r"^epoch-(\d+)(?:-step-(\d+))?\.weights\.h5$")
CORRUPT_SUFFIX = ".corrupt"

Position = tuple[int, int]  # (epochs done, steps done in the next epoch)


class CheckpointError(Exception):
    """No checkpoint in a directory can be read; the message names them."""


def checkpoint_path(directory: str, epoch: int, step: int = 0) -> str:
    name = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "")
    return os.path.join(directory, f"{name}.weights.h5")


def all_checkpoints(directory: str) -> list[tuple[Position, str]]:
    """(position, path) of every complete checkpoint in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = [(m, name) for name in os.listdir(directory) if (m := _PATTERN.match(name))]
    return sorted(((int(m.group(1)), int(m.group(2) or 0)), os.path.join(directory, name)) for m, name in found)


def latest(directory: str) -> tuple[Position, str] | None:
    """(position, path) of the newest checkpoint in `directory`, or None."""
    found = all_checkpoints(directory)
    return found[-1] if found else None


def save(model: keras.Model, directory: str, epoch: int, step: int = 0, *, keep: int = 3) -> str:
    """Saves `model` (with its optimizer) at position (epoch, step); prunes old checkpoints.

    Kept: the newest `keep` checkpoints, minus mid-epoch ones older than the newest end-of-epoch one.
    """
    path = checkpoint_path(directory, epoch, step)
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)
    found = all_checkpoints(directory)
    newest_epoch_end = max((position for position, _ in found if position[1] == 0), default=(0, 0))
    stale = [p for position, p in found if position[1] and position < newest_epoch_end]
    for old in stale + [p for _, p in found if p not in stale][:-keep]:
        os.remove(old)
    return path


def restore(model: keras.Model, path: str) -> None:
    """Loads a checkpoint into `model`, building the optimizer's slots first so they are restored too.

    Raises ValueError when the file does not fit the model, including the case Keras only warns about
    (layers missing from the file keep their fresh weights): a partly restored model is never returned.
    """
    optimizer = getattr(model, "optimizer", None)  # an uncompiled model has none
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    keras_compat.load_weights_strictly(model, path)


def restore_newest(model: keras.Model, directory: str, *, move_aside: bool = True) -> tuple[Position, str] | None:
    """Restores the newest readable checkpoint of `directory` into `model`; returns (position, path) or None.

    An unreadable checkpoint is reported, renamed `<name>.corrupt` (with `move_aside`) and skipped. A
    readable one that does not fit the model raises ValueError (the run directory belongs to another model).
    """
    found = all_checkpoints(directory)
    unreadable = []
    for position, path in reversed(found):
        try:
            restore(model, path)
            return position, path
        except OSError as error:  # h5py cannot read the file: it is damaged, not foreign
            unreadable.append(path)
            aside = f"{path}{CORRUPT_SUFFIX}" if move_aside else None
            then = f"moved it to {aside} and trying the previous one." if aside else "trying the previous one."
            logging.warning("Checkpoint %s cannot be read (%s); %s", path, str(error).splitlines()[0], then)
            if aside:
                os.replace(path, aside)
    if unreadable:
        raise CheckpointError(
            f"No checkpoint in {directory} can be read ({', '.join(os.path.basename(p) for p in unreadable)}"
            f"{' moved aside as *' + CORRUPT_SUFFIX if move_aside else ''}). Restore them from a copy, or start "
            "again in a new --model_dir."
        )
    return None
