"""Branch construction shared by every method: K sub-networks on a shared trunk (stem + first S stages) or
fully independent, each ending in its last feature map and a classifier."""

from collections.abc import Sequence

import keras
import numpy as np

from ffl_tf import heads
from ffl_tf.models import get_backbone
from ffl_tf.models.backbone import Backbone


def validate_branches(backbones: Sequence[str], shared_stages: int, *, min_branches: int = 2) -> None:
    """Raises ValueError, naming the fix, for branch layouts that cannot be built."""
    if len(backbones) < min_branches:
        raise ValueError(
            f"This method needs at least {min_branches} branches, got {len(backbones)}: {list(backbones)}."
        )
    if shared_stages < 0:
        raise ValueError(f"shared_stages must be >= 0, got {shared_stages}.")
    if shared_stages and len(set(backbones)) > 1:
        raise ValueError(
            f"Branches {list(backbones)} have different architectures, so they cannot share stages; "
            "use shared_stages=0 (independent networks) or the same backbone for every branch."
        )
    num_stages = len(get_backbone(backbones[0]).stages)
    if shared_stages >= num_stages:
        raise ValueError(
            f"shared_stages={shared_stages} is too large for {backbones[0]}, which has {num_stages} stages; "
            f"use at most {num_stages - 1} so every branch keeps a stage of its own."
        )


def image_input(image_shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> tuple:
    """(raw uint8 image input, the images normalised with `mean`/`std` in 0..255 units).

    Normalising inside the model is what lets every export take raw pixels.
    """
    images = keras.Input(tuple(image_shape), dtype="uint8", name="images")
    x = keras.layers.Normalization(mean=list(mean), variance=list(np.square(std)), name="normalize")(images)
    return images, x


def build_trunk(backbone: Backbone, shared_stages: int, input_shape: tuple[int, ...]) -> keras.Model:
    """The shared part: stem and stages 1..S."""
    inputs = keras.Input(input_shape, name="images")
    x = backbone.stem(inputs, "stem")
    for i in range(shared_stages):
        x = backbone.stages[i](x, f"stage{i + 1}")
    return keras.Model(inputs, x, name="trunk")


def build_branch(
    backbone: Backbone, shared_stages: int, input_shape: tuple[int, ...], num_classes: int, *, name: str
) -> keras.Model:
    """One branch: the un-shared stages (and the stem if nothing is shared), pooling and a classifier.

    Returns a model with outputs {"features": F_k (last feature map), "logits": z_k (float32)}.
    """
    inputs = keras.Input(input_shape, name="inputs")
    x = backbone.stem(inputs, "stem") if shared_stages == 0 else inputs
    for i in range(shared_stages, len(backbone.stages)):
        x = backbone.stages[i](x, f"stage{i + 1}")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="classifier")(pooled)
    return keras.Model(inputs, {"features": x, "logits": logits}, name=name)


def build_branches(
    inputs, backbones: Sequence[str], *, num_classes: int, shared_stages: int, sync_batchnorm: bool = False
) -> tuple:
    """Calls the trunk (if any) and one branch per backbone on `inputs`.

    Returns (the trunk's output, or `inputs` when nothing is shared; each branch's outputs dict).
    """
    x = inputs
    if shared_stages:
        x = build_trunk(get_backbone(backbones[0], sync_bn=sync_batchnorm), shared_stages, inputs.shape[1:])(x)
    branches = [
        build_branch(
            get_backbone(name, sync_bn=sync_batchnorm), shared_stages, x.shape[1:], num_classes, name=heads.branch(k)
        )(x)
        for k, name in enumerate(backbones)
    ]
    return x, branches


def mean_ensemble(logits: Sequence) -> "keras.KerasTensor":
    """The `ensemble` head: the mean of the branches' logits (float32)."""
    return keras.layers.Average(dtype="float32", name=heads.ENSEMBLE)(list(logits))
