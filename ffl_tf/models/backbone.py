"""A backbone is a stem plus a list of stages, so several branches can share a prefix of it."""

import dataclasses
from collections.abc import Callable

import keras

# A stage maps a tensor to a tensor, creating fresh layers on every call; the string is a name prefix.
Stage = Callable[[keras.KerasTensor, str], keras.KerasTensor]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A feature extractor cut where branches may split.

    `stem` then `stages[0]`, `stages[1]`, ... produce the last feature map F (before pooling). Calling a
    stage twice builds two independent copies, which is how un-shared stages are duplicated per branch.
    """

    name: str
    stem: Stage
    stages: tuple[Stage, ...]
