"""The training methods: FFL and the online-distillation methods it is compared with, one module each.

Each module declares a `Method` (`ffl_tf.methods.declaration`): its reference settings, how it validates
and builds a model, its loss (a pure function of tensors), the heads it outputs and reports, and what a
comparison may set. A new method is a new module and one line in `METHODS`.

    methods.get("ffl").build(["resnet32", "resnet32"], 100, (32, 32, 3), shared_stages=2)
    methods.loss_fn("ffl", temperature=4.0)    # the loss with its settings bound
    methods.loss_config(loss)                  # {"method": "ffl", "settings": {...}}: what a model file stores
"""

import functools
from collections.abc import Callable

import keras

from ffl_tf.methods import dml, ffl, okddip, one, vanilla
from ffl_tf.methods.declaration import Method

METHODS: dict[str, Method] = {m.name: m for m in (ffl.METHOD, dml.METHOD, one.METHOD, vanilla.METHOD, okddip.METHOD)}
# The method a run trains when --method is not given.
DEFAULT = ffl.METHOD.name

__all__ = ["DEFAULT", "METHODS", "Method", "get", "loss_config", "loss_fn", "loss_from_config"]


def get(name: str) -> Method:
    """The method registered as `name`; raises ValueError listing the known names."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose from: {', '.join(METHODS)}.")
    return METHODS[name]


def loss_fn(name: str, **settings) -> Callable[..., tuple]:
    """Method `name`'s loss with its settings bound: `settings` over its defaults (e.g. `temperature=4.0`)."""
    return get(name).loss_fn(**settings)


def loss_config(loss: Callable) -> dict | None:
    """A distillation loss as JSON: `{"method": name, "settings": {...}}` for a method's loss (`loss_fn`),
    `{"registered": name}` for a function registered with `keras.saving.register_keras_serializable`, None for
    any other callable (it cannot be stored). `loss_from_config` rebuilds it."""
    if isinstance(loss, functools.partial) and not loss.args:
        for method in METHODS.values():
            if loss.func is method.loss:
                return {"method": method.name, "settings": dict(loss.keywords)}
    registered = keras.saving.get_registered_name(loss) if hasattr(loss, "__name__") else None
    if registered and keras.saving.get_registered_object(registered) is loss:
        return {"registered": registered}
    return None


def loss_from_config(config: dict) -> Callable:
    """The loss `loss_config` described; raises ValueError naming what is missing (e.g. an unregistered function)."""
    if "method" in config:
        return loss_fn(config["method"], **config["settings"])
    loss = keras.saving.get_registered_object(config.get("registered"))
    if loss is None:
        raise ValueError(f"Received: distillation loss {config}; register it with "
                         "keras.saving.register_keras_serializable and import its module before loading the model.")
    return loss
