"""What the TensorFlow benchmarks share: FFL compiled with the official recipe, and its train step as a call."""

from collections.abc import Callable

import keras
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.model.distillation import DistillationModel


def compile_ffl(model: DistillationModel, optimizer: keras.optimizers.Optimizer, steps_per_epoch: int) -> None:
    """Compiles `model` for FFL training with the official code's defaults (T = 3, R = 80, weight decays)."""
    ffl = methods.get("ffl")
    model.compile(optimizer, distillation_loss=ffl.loss_fn(), steps_per_epoch=steps_per_epoch,
                  rampup_epochs=ffl.defaults["rampup_epochs"], weight_decay=1e-4,
                  module_weight_decay={"fusion": ffl.defaults["fusion_weight_decay"]})


def train_step_fn(model: keras.Model, batch: tuple) -> Callable[[], float]:
    """One call of the model's compiled train function on `batch` (the path `fit()` takes); returns the loss.

    Reading the loss as a float waits for the step to finish, so a clock around the call times all of it.
    """
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    train_function = model.train_function
    return lambda: float(train_function(iterator)["loss"])
