"""Branch construction shared by every method: K sub-networks on a shared trunk (stem + first S stages) or
fully independent, each ending in its last feature map and a classifier."""

from collections.abc import Sequence

import keras
import numpy as np

from ffl_tf.backbones import Backbone, BranchSpec, describe, get_backbone, layers
from ffl_tf.model import heads

# The name of the shared part's sub-model (stem and the first S stages).
TRUNK = "trunk"


def validate_branches(backbones: Sequence[BranchSpec], shared_stages: int, *, min_branches: int = 2) -> None:
    """Raises ValueError, naming the fix, for branch layouts that cannot be built."""
    if len(backbones) < min_branches:
        raise ValueError(
            f"This method needs at least {min_branches} branches, got {len(backbones)}: "
            f"{[describe(b) for b in backbones]}."
        )
    if shared_stages < 0:
        raise ValueError(f"shared_stages must be >= 0, got {shared_stages}.")
    if not shared_stages:
        return
    if any(b is not backbones[0] and b != backbones[0] for b in backbones):
        raise ValueError(
            f"Branches {[describe(b) for b in backbones]} have different architectures, so they cannot share "
            "stages; use shared_stages=0 (independent networks) or the same backbone for every branch."
        )
    num_stages = len(get_backbone(backbones[0]).stages)
    if shared_stages >= num_stages:
        raise ValueError(
            f"shared_stages={shared_stages} is too large for {describe(backbones[0])}, which has {num_stages} "
            f"stages; use at most {max(num_stages - 1, 0)} so every branch keeps a stage of its own"
            + (" (a whole network given as one model has none: use shared_stages=0)." if not num_stages else ".")
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
    return keras.Model(inputs, x, name=TRUNK)


def build_branch(
    backbone: Backbone, shared_stages: int, input_spec: keras.KerasTensor, num_classes: int, *, name: str
) -> keras.Model:
    """One branch: its preprocessing (if any), the un-shared stages (and the stem if nothing is shared),
    pooling and a classifier (initialised as PyTorch's `nn.Linear`, as in the reference code). `input_spec` is
    the tensor the branch will be called on.

    Returns a model with outputs {"features": F_k (last feature map), "logits": z_k (float32)}.
    """
    inputs = keras.Input(input_spec.shape[1:], dtype=input_spec.dtype, name="inputs")
    x = backbone.preprocess(inputs, "input") if backbone.preprocess else inputs
    x = backbone.stem(x, "stem") if shared_stages == 0 else x
    for i in range(shared_stages, len(backbone.stages)):
        x = backbone.stages[i](x, f"stage{i + 1}")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.dense(pooled, num_classes, dtype="float32", name="classifier")
    return keras.Model(inputs, {"features": x, "logits": logits}, name=name)


def build_branches(
    images, normalized, backbones: Sequence[BranchSpec], *, num_classes: int, shared_stages: int,
    sync_batchnorm: bool = False, pretrained: str | None = None,
) -> tuple:
    """Calls the trunk (if any) and one branch per backbone; returns (trunk output or None, branch outputs).

    Branches take `normalized` images, except keras.applications ones, which take the raw `images` and
    preprocess them their own way. A keras.Model given for several branches is cloned for each after the
    first (fresh weights), so no two branches share weights by accident.
    """
    resolved = [get_backbone(spec, sync_bn=sync_batchnorm, pretrained=pretrained) for spec in _unshared(backbones)]
    trunk = None
    if shared_stages:
        trunk = build_trunk(resolved[0], shared_stages, normalized.shape[1:])(normalized)
    outputs = []
    for k, backbone in enumerate(resolved):
        x = trunk if trunk is not None else (images if backbone.preprocess else normalized)
        outputs.append(build_branch(backbone, shared_stages, x, num_classes, name=heads.branch(k))(x))
    return trunk, outputs


def _unshared(backbones: Sequence[BranchSpec]) -> list[BranchSpec]:
    """`backbones` with every repeat of a keras.Model object replaced by a clone (re-initialised weights)."""
    seen, specs = set(), []
    for spec in backbones:
        if isinstance(spec, keras.Model) and id(spec) in seen:
            spec = keras.models.clone_model(spec)
        seen.add(id(spec))
        specs.append(spec)
    return specs


def mean_ensemble(logits: Sequence) -> keras.KerasTensor:
    """The `ensemble` head: the mean of the branches' logits (float32)."""
    return keras.layers.Average(dtype="float32", name=heads.ENSEMBLE)(list(logits))
