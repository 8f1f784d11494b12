"""Networks trained alone: each branch with its own cross-entropy, no distillation.

With one backbone this is "the network trained alone", the baseline of every table in the paper; with
several, they are trained independently in one run (their `ensemble` head is reported too).
"""

from collections.abc import Sequence

from ffl_tf.backbones import BranchSpec
from ffl_tf.methods.declaration import Method, branch_logits, branches_and_ensemble, constant
from ffl_tf.model import heads
from ffl_tf.model.branches import build_branches, image_input, mean_ensemble, validate_branches
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.model.losses import cross_entropy

# SGD with Nesterov momentum, as the FFL code trains its networks; independent networks (no distillation,
# so no temperature and no ramp-up).
DEFAULTS = {"nesterov": True, "shared_stages": 0}


def validate(backbones: Sequence[BranchSpec], shared_stages: int, *, method: str = "vanilla",
             min_branches: int = 1) -> None:
    """Raises ValueError, naming the fix, unless there are `min_branches` or more independent networks."""
    if shared_stages:
        raise ValueError(f"{method} trains independent networks: use shared_stages=0, got {shared_stages}.")
    validate_branches(backbones, 0, min_branches=min_branches)


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
    method: str = "vanilla",
    min_branches: int = 1,
) -> DistillationModel:
    """One independent network per backbone, nothing shared but the input; heads `branch_<k>` and, when there
    are several, `ensemble` (their mean logits). `method` names the model (DML builds its networks here too)."""
    validate(backbones, shared_stages, method=method, min_branches=min_branches)
    images, x = image_input(image_shape, mean, std)
    _, branches = build_branches(images, x, backbones, num_classes=num_classes, shared_stages=0,
                                 sync_batchnorm=sync_batchnorm, pretrained=pretrained)
    outputs = {heads.branch(k): b["logits"] for k, b in enumerate(branches)}
    if len(branches) > 1:
        outputs[heads.ENSEMBLE] = mean_ensemble(outputs.values())
    return DistillationModel(images, outputs, name=method.lower())


def loss(logits: dict, labels, *, kd_weight, sample_weight=None) -> tuple:
    """L = sum_k CE(z_k, y); `kd_weight` is unused (there is no distillation)."""
    del kd_weight
    ce = sum(cross_entropy(z, labels, sample_weight) for z in branch_logits(logits))
    return ce, {"ce_branches": ce}


METHOD = Method(
    name="vanilla",
    title="each network trained alone, by its own cross-entropy (no distillation)",
    defaults=DEFAULTS,
    validate=validate,
    build=build,
    loss=loss,
    heads=branches_and_ensemble,
    headline=constant(heads.BRANCH_MEAN),
)

