"""The training methods: FFL and the baselines it is compared with, each a small module.

A method module has `DEFAULTS` (its reference code's settings, the one home of each), `build(...)` (a
functional `DistillationModel` whose outputs are its heads) and `loss(logits, labels, *, kd_weight,
sample_weight=None, **settings)`, a pure function of tensors returning `(total, parts)`.
"""

import functools
import inspect
from collections.abc import Callable
from types import ModuleType

from ffl_tf.methods import dml, ffl, one, vanilla

METHODS: dict[str, ModuleType] = {"ffl": ffl, "dml": dml, "one": one, "vanilla": vanilla}
# Arguments of `loss` that the training step supplies, not the run's settings.
_STEP_ARGUMENTS = ("logits", "labels", "kd_weight", "sample_weight")


def get(name: str) -> ModuleType:
    """The method module registered as `name`; raises ValueError listing the known names."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose from: {', '.join(METHODS)}.")
    return METHODS[name]


def settings(function: Callable) -> list[str]:
    """The keyword settings a method's `build` or `loss` takes (those a run's config must supply)."""
    return [name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _STEP_ARGUMENTS]


def loss_fn(name: str, **overrides) -> Callable:
    """Method `name`'s loss with its `DEFAULTS`, updated by `overrides` (e.g. `temperature=4.0`)."""
    method = get(name)
    chosen = {key: method.DEFAULTS[key] for key in settings(method.loss) if key in method.DEFAULTS}
    return functools.partial(method.loss, **{**chosen, **overrides})
