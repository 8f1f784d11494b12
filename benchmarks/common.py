"""What the TensorFlow benchmarks share: FFL compiled with the official recipe, and its train step as a call."""

from collections.abc import Callable

import keras
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.model import DistillationModel


def compile_ffl(model: DistillationModel, optimizer: keras.optimizers.Optimizer, steps_per_epoch: int) -> None:
    """Compiles `model` for FFL training with the official code's defaults (T = 3, R = 80, weight decays)."""
    model.compile(optimizer, distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=steps_per_epoch,
                  rampup_epochs=methods.ffl.DEFAULTS["rampup_epochs"], weight_decay=1e-4, fusion_weight_decay=1e-5)


def train_step_fn(model: keras.Model, batch: tuple) -> Callable[[], float]:
    """One call of the model's compiled train function on `batch` (the path `fit()` takes); returns the loss.

    Reading the loss as a float waits for the step to finish, so a clock around the call times all of it.
    """
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    train_function = model.train_function
    return lambda: float(train_function(iterator)["loss"])
