"""FFL (Kim et al., ICPR 2020): K branches and a fusion module teaching each other online.

The fused classifier learns from the branches' ensemble and every branch from the fused classifier
(docs/method.md). The defaults are the official code's CIFAR recipe.
"""

from collections.abc import Sequence

from ffl_tf.backbones import BranchSpec
from ffl_tf.methods.declaration import Method, branch_logits, branches_and_ensemble, constant
from ffl_tf.model import heads, losses
from ffl_tf.model.branches import build_branches, image_input, mean_ensemble, validate_branches
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.model.fusion import build_fusion

# The official code's settings (Jangho-Kim/FFL-pytorch): T = 3, ramp-up over 80 of 300 epochs, Nesterov
# SGD, the stem and the first two of three stages shared, weight decay 1e-5 on the fusion module.
DEFAULTS = {"temperature": 3.0, "rampup_epochs": 80.0, "nesterov": True, "shared_stages": 2,
            "distill_to_fused": True, "distill_to_branches": True, "fusion_weight_decay": 1e-5}


def validate(backbones: Sequence[BranchSpec], shared_stages: int) -> None:
    """Raises ValueError, naming the fix, for a branch layout FFL cannot build."""
    validate_branches(backbones, shared_stages, min_branches=2)


def build_ffl_model(
    backbones: Sequence[BranchSpec],
    num_classes: int,
    image_shape: Sequence[int],
    *,
    shared_stages: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (255.0,),
    fusion_channels: int | None = None,
    sync_batchnorm: bool = False,
    pretrained: str | None = None,
) -> DistillationModel:
    """Builds the FFL network for raw uint8 images, which it normalises itself with `mean`/`std` (0..255 units).

    Args:
        backbones: one branch each: a backbone name, `keras:<Application>`, `package.module:function`, a
            `keras.Model` mapping images to a 4-D feature map (given twice, it is cloned: fresh weights),
            a zero-argument function returning one, or a `Backbone` (see `ffl_tf.models`).
        num_classes: classes of every classifier.
        image_shape: (height, width, channels) of the input images.
        shared_stages: stages shared by all branches with the stem; 0 = independent networks.
        mean, std: per-channel pixel statistics, 0..255 units.
        fusion_channels: output channels of the fusion module (default: the first branch's).
        sync_batchnorm: batch-norm statistics over the global batch across replicas.
        pretrained: "imagenet" loads keras.applications branches' ImageNet weights.

    Returns:
        A `DistillationModel` whose heads are `branch_<k>`, `ensemble` (mean of the branch logits) and `fused`.

    Example:

    >>> model = build_ffl_model(["resnet32", "resnet32"], 100, (32, 32, 3), shared_stages=2)
    >>> sorted(model.output)
    ['branch_0', 'branch_1', 'ensemble', 'fused']
    """
    validate(backbones, shared_stages)
    images, x = image_input(image_shape, mean, std)
    _, branches = build_branches(
        images, x, backbones, num_classes=num_classes, shared_stages=shared_stages, sync_batchnorm=sync_batchnorm,
        pretrained=pretrained,
    )
    fusion = build_fusion(
        [b["features"].shape[1:] for b in branches], num_classes, channels=fusion_channels, sync_bn=sync_batchnorm
    )
    outputs = {heads.branch(k): b["logits"] for k, b in enumerate(branches)}
    outputs[heads.ENSEMBLE] = mean_ensemble(outputs.values())
    outputs[heads.FUSED] = fusion([b["features"] for b in branches])
    return DistillationModel(images, outputs, name="ffl")


build = build_ffl_model


def loss(
    logits: dict, labels, *, kd_weight, temperature: float, distill_to_fused: bool, distill_to_branches: bool,
    sample_weight=None,
) -> tuple:
    """`losses.ffl_loss` on a model's heads; the ensemble is the model's own `ensemble` head."""
    return losses.ffl_loss(
        branch_logits(logits), logits[heads.FUSED], labels, temperature=temperature, kd_weight=kd_weight,
        ensemble=logits[heads.ENSEMBLE], distill_to_fused=distill_to_fused,
        distill_to_branches=distill_to_branches, sample_weight=sample_weight,
    )


METHOD = Method(
    name="ffl",
    title="FFL: feature fusion learning (Kim, Hyun, Chung, Kwak, ICPR 2020)",
    defaults=DEFAULTS,
    validate=validate,
    build=build,
    loss=loss,
    heads=lambda num_branches: [*branches_and_ensemble(num_branches), heads.FUSED],
    headline=constant(heads.FUSED),
    build_settings=("fusion_channels",),
    loss_settings=("temperature", "distill_to_fused", "distill_to_branches"),
    module_weight_decay={"fusion": "fusion_weight_decay"},
    comparison_settings=("shared_stages", "rampup_epochs"),
)
