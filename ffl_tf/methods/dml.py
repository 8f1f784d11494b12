"""DML (Zhang et al., CVPR 2018, "Deep Mutual Learning"): K independent networks, each distilled from the others.

L = sum_k [ CE(z_k, y) + w(e) / (K - 1) * sum_{j != k} KL_T(z_j -> z_k) ], every teacher stopped. The paper
updates the networks one after the other; here all of them are updated from one forward pass, as most
reimplementations do: each network's gradient is the same, only the other networks' logits it learns
from are those before this step's update instead of after it.
"""

from collections.abc import Sequence

from ffl_tf import heads
from ffl_tf.branches import validate_branches
from ffl_tf.losses import cross_entropy, kl_divergence
from ffl_tf.methods.vanilla import independent_networks
from ffl_tf.model import DistillationModel
from ffl_tf.models import BranchSpec

# The paper's settings: T = 1, no ramp-up, SGD with Nesterov momentum.
DEFAULTS = {"temperature": 1.0, "rampup_epochs": 0.0, "nesterov": True, "shared_stages": 0}


def validate(backbones: Sequence[BranchSpec], shared_stages: int) -> None:
    """Raises ValueError, naming the fix, unless there are K >= 2 independent networks."""
    if shared_stages:
        raise ValueError(f"DML trains independent networks: use shared_stages=0, got {shared_stages}.")
    validate_branches(backbones, 0, min_branches=2)


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
    """K >= 2 independent networks of any architectures; heads `branch_<k>` and `ensemble` (mean logits)."""
    validate(backbones, shared_stages)
    return independent_networks(backbones, num_classes, image_shape, mean, std, sync_batchnorm, pretrained,
                                name="dml")


def dml_loss(branch_logits: Sequence, labels, *, temperature: float, kd_weight, sample_weight=None) -> tuple:
    """DML's loss and its parts `ce_branches` (sum_k CE) and `kd_branches` (sum_k of the mean KL from the others)."""
    others = len(branch_logits) - 1
    ce = sum(cross_entropy(z, labels, sample_weight) for z in branch_logits)
    kd = sum(
        kl_divergence(teacher, student, temperature, sample_weight) / others
        for k, student in enumerate(branch_logits)
        for j, teacher in enumerate(branch_logits)
        if j != k
    )
    return ce + kd_weight * kd, {"ce_branches": ce, "kd_branches": kd}


def loss(logits: dict, labels, *, kd_weight, temperature: float, sample_weight=None) -> tuple:
    """`dml_loss` on a model's branch heads."""
    branch_logits = [logits[name] for name in heads.branch_heads(logits)]
    return dml_loss(branch_logits, labels, temperature=temperature, kd_weight=kd_weight, sample_weight=sample_weight)
