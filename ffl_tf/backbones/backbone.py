"""A backbone is a stem plus a list of stages, so several branches can share a prefix of it."""

import dataclasses
from collections.abc import Callable

import keras

# A stage maps a tensor to a tensor, creating fresh layers on every call; the string is a name prefix.
Stage = Callable[[keras.KerasTensor, str], keras.KerasTensor]


class BackboneError(ValueError):
    """A branch that cannot be built as given; the message names it and the contract it breaks."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A feature extractor cut where branches may split.

    `stem` then `stages[0]`, `stages[1]`, ... produce the last feature map F (before pooling). Calling a
    stage twice builds two independent copies, which is how un-shared stages are duplicated per branch.
    A backbone with no stages (a whole network in its stem) cannot share a trunk.

    `preprocess` maps the raw uint8 images to what the stem takes (a keras.applications network's own
    preprocessing); None means the run's normalised images ((pixels - mean) / std).
    """

    name: str
    stem: Stage
    stages: tuple[Stage, ...]
    preprocess: Callable[[keras.KerasTensor, str], keras.KerasTensor] | None = None


def check_feature_map(features, name: str) -> keras.KerasTensor:
    """Returns `features` if it is a 4-D feature map; else raises BackboneError naming `name` and the contract."""
    if len(features.shape) != 4:
        raise BackboneError(
            f"Backbone {name} returned a tensor of shape {tuple(features.shape)}; a branch must map images "
            "[batch, height, width, channels] to a 4-D feature map [batch, h, w, channels] (no pooling, no "
            "classifier: e.g. include_top=False)."
        )
    return features
