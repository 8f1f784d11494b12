"""Networks trained alone: each branch with its own cross-entropy, no distillation.

With one backbone this is "the network trained alone", the baseline of every table in the paper; with
several, they are trained independently in one run (their `ensemble` head is reported too).
"""

from collections.abc import Sequence

from ffl_tf import heads
from ffl_tf.branches import build_branches, image_input, mean_ensemble, validate_branches
from ffl_tf.losses import cross_entropy
from ffl_tf.model import DistillationModel
from ffl_tf.models import BranchSpec

DEFAULTS = {"rampup_epochs": 0.0, "nesterov": True, "shared_stages": 0}


def validate(backbones: Sequence[BranchSpec], shared_stages: int) -> None:
    """Raises ValueError, naming the fix, unless the networks are independent (one or more)."""
    if shared_stages:
        raise ValueError(f"vanilla trains independent networks: use shared_stages=0, got {shared_stages}.")
    validate_branches(backbones, 0, min_branches=1)


def build(
    backbones: Sequence[BranchSpec],
    num_classes: int,
    image_shape: Sequence[int],
    *,
    shared_stages: int = 0,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (255.0,),
    sync_batchnorm: bool = False,
    pretrained: str | None = None,
) -> DistillationModel:
    """One independent network per backbone; heads `branch_<k>` (and `ensemble` when there are several)."""
    validate(backbones, shared_stages)
    return independent_networks(backbones, num_classes, image_shape, mean, std, sync_batchnorm, pretrained,
                                name="vanilla")


def independent_networks(backbones, num_classes, image_shape, mean, std, sync_batchnorm, pretrained, *, name: str):
    """K networks with nothing shared but the input; `ensemble` is their mean logits when K > 1."""
    images, x = image_input(image_shape, mean, std)
    _, branches = build_branches(images, x, backbones, num_classes=num_classes, shared_stages=0,
                                 sync_batchnorm=sync_batchnorm, pretrained=pretrained)
    outputs = {heads.branch(k): b["logits"] for k, b in enumerate(branches)}
    if len(branches) > 1:
        outputs[heads.ENSEMBLE] = mean_ensemble(outputs.values())
    return DistillationModel(images, outputs, name=name)


def loss(logits: dict, labels, *, kd_weight, sample_weight=None) -> tuple:
    """L = sum_k CE(z_k, y); `kd_weight` is unused (there is no distillation)."""
    del kd_weight
    ce = sum(cross_entropy(logits[name], labels, sample_weight) for name in heads.branch_heads(logits))
    return ce, {"ce_branches": ce}

