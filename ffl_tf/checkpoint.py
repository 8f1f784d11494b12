"""Per-epoch training checkpoints (weights and optimizer state), written atomically, for resuming runs."""

import os
import re
import tempfile

import keras
from absl import logging

from ffl_tf import atomic

_PATTERN = re.compile(r"^epoch-(\d+)\.weights\.h5$")


def checkpoint_path(directory: str, epoch: int) -> str:
    return os.path.join(directory, f"epoch-{epoch:04d}.weights.h5")


def latest(directory: str) -> tuple[int, str] | None:
    """(epoch, path) of the newest complete checkpoint in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    epochs = [int(m.group(1)) for m in map(_PATTERN.match, os.listdir(directory)) if m]
    return (max(epochs), checkpoint_path(directory, max(epochs))) if epochs else None


def save(model: keras.Model, directory: str, epoch: int, *, keep: int = 3) -> str:
    """Saves `model` (with its optimizer) as the checkpoint after `epoch` epochs; keeps the newest `keep`."""
    path = checkpoint_path(directory, epoch)
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)
    for old in sorted(int(m.group(1)) for m in map(_PATTERN.match, os.listdir(directory)) if m)[:-keep]:
        os.remove(checkpoint_path(directory, old))
    return path


def restore(model: keras.Model, path: str) -> None:
    """Loads a checkpoint into `model`, building the optimizer's slots first so they are restored too."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every `every` epochs and of the last epoch.

    Under multi-worker training every worker must take part in saving; only the chief's copy is kept.
    """

    def __init__(self, directory: str, *, epochs: int, every: int = 1, keep: int = 3, is_chief: bool = True):
        super().__init__()
        self.directory, self.epochs, self.every, self.keep, self.is_chief = directory, epochs, every, keep, is_chief

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        done = epoch + 1
        if done % self.every and done != self.epochs:
            return
        if self.is_chief:
            path = save(self.model, self.directory, done, keep=self.keep)
            logging.debug("Saved checkpoint %s", path)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                self.model.save_weights(os.path.join(scratch, "worker.weights.h5"))
