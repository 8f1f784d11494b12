"""The online-distillation model and its parts: branches on a shared trunk or independent, FFL's fusion module,
head names, the losses (pure functions of tensors), calibration metrics, and `DistillationModel`, the one
`keras.Model` subclass whose train step every method shares."""

from ffl_tf.model.distillation import DistillationModel, head_model, parameter_counts

__all__ = ["DistillationModel", "head_model", "parameter_counts"]
