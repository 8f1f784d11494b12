"""The training methods: FFL and the online-distillation methods it is compared with, one module each.

Each module declares a `Method` (`ffl_tf.methods.declaration`): its reference settings, how it validates
and builds a model, its loss (a pure function of tensors), the heads it outputs and reports, and what a
comparison may set. A new method is a new module and one line in `METHODS`.

    methods.get("ffl").build(["resnet32", "resnet32"], 100, (32, 32, 3), shared_stages=2)
    methods.loss_fn("ffl", temperature=4.0)    # the loss with its settings bound
"""

from collections.abc import Callable

from ffl_tf.methods import dml, ffl, okddip, one, vanilla
from ffl_tf.methods.declaration import Method

METHODS: dict[str, Method] = {m.name: m for m in (ffl.METHOD, dml.METHOD, one.METHOD, vanilla.METHOD, okddip.METHOD)}
# The method a run trains when --method is not given.
DEFAULT = ffl.METHOD.name

__all__ = ["DEFAULT", "METHODS", "Method", "get", "loss_fn"]


def get(name: str) -> Method:
    """The method registered as `name`; raises ValueError listing the known names."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose from: {', '.join(METHODS)}.")
    return METHODS[name]


def loss_fn(name: str, **settings) -> Callable[..., tuple]:
    """Method `name`'s loss with its settings bound: `settings` over its defaults (e.g. `temperature=4.0`)."""
    return get(name).loss_fn(**settings)
