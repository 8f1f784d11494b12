"""What the benchmarks share: FFL compiled with the official recipe's settings."""

import keras

from ffl_tf import methods
from ffl_tf.model import DistillationModel


def compile_ffl(model: DistillationModel, optimizer: keras.optimizers.Optimizer, steps_per_epoch: int) -> None:
    """Compiles `model` for FFL training with the official code's defaults (T = 3, R = 80, weight decays)."""
    model.compile(optimizer, distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=steps_per_epoch,
                  rampup_epochs=methods.ffl.DEFAULTS["rampup_epochs"], weight_decay=1e-4, fusion_weight_decay=1e-5)
