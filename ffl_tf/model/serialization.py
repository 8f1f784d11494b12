"""How a `DistillationModel` goes into a Keras model file (`model.save("x.keras")`) and comes back compiled.

Keras stores a model's config (its layers), its weights and, through `get_compile_config`, how it was
compiled; `keras.saving.load_model(path)` then calls `compile_from_config` and restores the optimizer's state
(its step count, momentum, loss scale) with the weights. `DistillationModel.compile` takes arguments Keras
does not know, so `Serializable` stores them beside Keras's own (optimizer with its learning-rate schedule,
jit_compile, steps_per_execution):

- the distillation loss, a Python function with its settings bound: a method's loss (`ffl_tf.methods.loss_fn`)
  as its method's name and settings, a function registered with `keras.saving.register_keras_serializable` by
  its registered name (`ffl_tf.methods.loss_config`). Any other loss cannot be stored: saving warns, and the
  file loads uncompiled (call `compile()` again);
- steps_per_epoch, rampup_epochs, weight_decay and module_weight_decay, as given.

`class_names` (the classes in label order; training sets them) are part of the model's config, so a model
file alone is enough to name its predictions.
"""

import warnings

import keras

# The compile config's entry for the arguments of `DistillationModel.compile` that Keras does not know.
DISTILLATION = "distillation"
CLASS_NAMES = "class_names"


class Serializable:
    """Mixin of `DistillationModel`: its class names in its config, its compile arguments in its compile config."""

    class_names: tuple[str, ...] | None = None

    def get_config(self) -> dict:
        config = super().get_config()
        if self.class_names is not None:
            config[CLASS_NAMES] = list(self.class_names)
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        class_names = config.pop(CLASS_NAMES, None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.class_names = None if class_names is None else tuple(class_names)
        return model

    def get_compile_config(self) -> dict:
        """Keras's compile config plus `DISTILLATION`: the loss's config and the ramp-up and weight-decay settings;
        empty (the file loads uncompiled) when the model is not compiled or its loss cannot be stored."""
        from ffl_tf import methods  # methods build DistillationModels: imported when needed, not at the top

        if not getattr(self, "compiled", False) or not hasattr(self, "distillation_loss"):
            return {}
        loss = methods.loss_config(self.distillation_loss)
        if loss is None:
            warnings.warn(
                f"The distillation loss {self.distillation_loss!r} is neither a method's (ffl_tf.methods.loss_fn) "
                "nor a function registered with keras.saving.register_keras_serializable, so the model file stores "
                "no compile state: compile the loaded model again.", stacklevel=2)
            return {}
        if not self.optimizer.built:  # so the file holds every optimizer variable `compile_from_config` creates
            self._maybe_symbolic_build()  # (keras_compat.LazyOptimizerBuild's: builds the optimizer, nothing else)
        distillation = {"loss": loss, "steps_per_epoch": self.steps_per_epoch, "rampup_epochs": self.rampup_epochs,
                        "weight_decay": self.weight_decay, "module_weight_decay": dict(self.module_weight_decay)}
        return {**super().get_compile_config(), DISTILLATION: distillation}

    def compile_from_config(self, config: dict) -> None:
        """Compiles the loaded model as it was compiled when saved and creates the optimizer's variables, which
        Keras then fills with the saved optimizer state."""
        from ffl_tf import methods

        config = dict(config)
        if DISTILLATION not in config:  # not written by `get_compile_config`: Keras would mark it compiled anyway
            raise ValueError("This model file's compile config has no distillation settings; load it with "
                             "keras.saving.load_model(path, compile=False) and compile it again.")
        distillation = dict(config.pop(DISTILLATION))
        loss = methods.loss_from_config(distillation.pop("loss"))
        self.compile(distillation_loss=loss, **distillation, **keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
