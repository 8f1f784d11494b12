"""The training run's callbacks: divergence checks, checkpoints (per epoch, every N steps, on preemption),
throughput, the learning rate in the logs and a progress bar with the headline numbers."""

import math
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
from absl import logging

from ffl_tf.runs import checkpoint, preemption


class NonFiniteLossError(RuntimeError):
    """Training diverged; raised from inside fit() so no checkpoint of the diverged weights is written."""


def check_finite_weights(model: keras.Model, when: str) -> None:
    """Raises NonFiniteLossError naming a variable if any trainable weight is NaN/Inf."""
    broken = [w.path for w in model.trainable_weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if broken:
        raise NonFiniteLossError(f"the weights became NaN/Inf {when} ({len(broken)} variables, e.g. {broken[0]})")


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops at the first NaN/Inf loss, or at an epoch's end with NaN/Inf weights, before its checkpoint.

    A step's loss is computed before its update, so the update of an epoch's last step can break the
    weights with every logged loss finite: the weights themselves are checked before they are saved.
    """

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"the training loss became {loss} at step {batch + 1} of epoch {self.epoch}")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        check_finite_weights(self.model, f"in the last step of epoch {self.epoch}")


class Checkpoints(keras.callbacks.Callback):
    """Checkpoints at the end of every `every` epochs and of the last, every `every_steps` steps, and on
    preemption (then raises `preemption.Preempted` to end the run at once).

    `step_offset` is the number of steps of the first epoch done before this fit (a resumed epoch).
    Under multi-worker training every worker takes part in saving; only the chief's copy is kept.
    `heartbeat` runs on the chief before each checkpoint (the run lock's: it raises if the lock was lost, so a
    process that no longer holds the run writes nothing more; `ffl_tf.runs.lock`).
    """

    def __init__(self, directory: str, *, epochs: int, steps_per_epoch: int, every: int = 1, every_steps: int = 0,
                 keep: int = 3, is_chief: bool = True, stop: preemption.StopRequest | None = None,
                 step_offset: int = 0, heartbeat: Callable[[], None] | None = None):
        super().__init__()
        self.directory, self.epochs, self.steps_per_epoch = directory, epochs, steps_per_epoch
        self.every, self.every_steps, self.keep, self.is_chief = every, every_steps, keep, is_chief
        self.stop, self.step_offset, self.heartbeat = stop, step_offset, heartbeat

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        step = self.step_offset + batch + 1
        if step >= self.steps_per_epoch:
            return  # the epoch's end: on_epoch_end saves (after its logs are written)
        stopping = self.stop is not None and self.stop.requested()
        if stopping or (self.every_steps and step % self.every_steps == 0):
            check_finite_weights(self.model, f"at step {step} of epoch {self.epoch + 1}")
            path = self._save(self.epoch, step)
            if stopping:
                raise preemption.Preempted(path, self.epoch, step, self.steps_per_epoch)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.step_offset = 0
        done = epoch + 1
        stopping = self.stop is not None and self.stop.requested()
        if stopping or done % self.every == 0 or done == self.epochs:
            path = self._save(done, 0)
            if stopping and done < self.epochs:
                raise preemption.Preempted(path, done, 0, self.steps_per_epoch)

    def _save(self, epoch: int, step: int) -> str | None:
        if self.is_chief:
            if self.heartbeat is not None:
                self.heartbeat()
            path = checkpoint.save(self.model, self.directory, epoch, step, keep=self.keep)
            logging.debug("Saved checkpoint %s", path)
            return path
        with tempfile.TemporaryDirectory() as scratch:
            self.model.save_weights(f"{scratch}/worker.weights.h5")
        return None


class Throughput(keras.callbacks.Callback):
    """Training images/second per epoch, timed between batch ends (excludes tracing and evaluation)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.history: list[float] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.start, self.steps = None, 0

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.steps:
            rate = self.steps * self.batch_size / (time.perf_counter() - self.start)
            self.history.append(rate)
            if logs is not None:
                logs["images_per_second"] = rate


class StallWarning(keras.callbacks.Callback):
    """Warns once when a run stalls: after `after_epochs` epochs its evaluation accuracy (the branches' mean) is
    still below twice chance while its training cross-entropy falls, the mark of networks that learn the
    training labels while their predictions stay near-uniform, e.g. pulled together by an early, strong
    distillation. `hint` names the setting that helps.
    """

    def __init__(self, num_classes: int, hint: str, *, after_epochs: int = 3):
        super().__init__()
        self.bound, self.hint, self.after_epochs = 2.0 / num_classes, hint, after_epochs
        self.first_cross_entropy, self.warned = None, False

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        cross_entropy, accuracy = logs.get("ce_branches"), logs.get("val_acc_branch_mean")
        if cross_entropy is None or accuracy is None or self.warned:
            return
        if self.first_cross_entropy is None:
            self.first_cross_entropy = float(cross_entropy)
        if epoch + 1 >= self.after_epochs and accuracy < self.bound and cross_entropy < self.first_cross_entropy:
            self.warned = True
            logging.warning(
                "The run is stalling: after epoch %d the evaluation accuracy of the branches is %.1f%%, still "
                "below twice chance (%.1f%%), while the training cross-entropy fell from %.3f to %.3f. %s",
                epoch + 1, 100 * accuracy, 100 * self.bound, self.first_cross_entropy, cross_entropy, self.hint)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate of the epoch's last step to its logs, so TensorBoard and history.csv show it."""

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HeadlineProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with the headline numbers only; TensorBoard and history.csv get every metric."""

    SHOWN = ("loss", "acc_branch_mean", "acc_ensemble", "acc_fused", "kd_weight", "images_per_second")

    def _headline(self, logs):
        shown = (*self.SHOWN, *(f"val_{name}" for name in self.SHOWN[:4]))
        return {k: v for k, v in (logs or {}).items() if k in shown}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._headline(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._headline(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._headline(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._headline(logs))
