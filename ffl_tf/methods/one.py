"""ONE (Lan, Zhu, Gong, NeurIPS 2018, "Knowledge Distillation by On-the-Fly Native Ensemble").

K branches on a shared trunk; a gate computed from the trunk's output weighs the branches' logits into
the teacher z_t = sum_k g_k z_k (the `ensemble` head), which every branch learns from:

    L = sum_k CE(z_k, y) + CE(z_t, y) + w(e) * sum_k KL_T(z_t -> z_k)

The gate is the official code's (Lan1991Xu/ONE_NeurIPS2018): global average pooling -> dense(K) ->
BatchNorm -> ReLU -> softmax. CE(z_t) trains the gate and every branch. The official code switches to
Bottleneck blocks for depth >= 44; here the backbones are the same as for the other methods (BasicBlock
CIFAR ResNets), so every method compares like with like.
"""

from collections.abc import Sequence

import keras
from keras import ops

from ffl_tf.backbones import BranchSpec, layers
from ffl_tf.methods.declaration import Method, branch_logits, branches_and_ensemble, constant
from ffl_tf.model import heads
from ffl_tf.model.branches import build_branches, image_input, validate_branches
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.model.losses import cross_entropy, kl_divergence

# The official code's settings: T = 3, ramp-up over 80 epochs, SGD momentum 0.9 without Nesterov, the
# stem and stages 1-2 shared.
DEFAULTS = {"temperature": 3.0, "rampup_epochs": 80.0, "nesterov": False, "shared_stages": 2}


def validate(backbones: Sequence[BranchSpec], shared_stages: int) -> None:
    """Raises ValueError, naming the fix, unless K >= 2 branches of one backbone share a trunk."""
    if shared_stages < 1:
        raise ValueError(f"ONE's gate reads the shared trunk: use shared_stages >= 1, got {shared_stages}.")
    validate_branches(backbones, shared_stages, min_branches=2)


def build(
    backbones: Sequence[BranchSpec],
    num_classes: int,
    image_shape: Sequence[int],
    *,
    shared_stages: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (255.0,),
    sync_batchnorm: bool = False,
    pretrained: str | None = None,
) -> DistillationModel:
    """K branches of one backbone on a shared trunk; heads `branch_<k>` and `ensemble` (the gated teacher)."""
    validate(backbones, shared_stages)
    images, x = image_input(image_shape, mean, std)
    trunk, branches = build_branches(
        images, x, backbones, num_classes=num_classes, shared_stages=shared_stages, sync_batchnorm=sync_batchnorm,
        pretrained=pretrained,
    )
    outputs = {heads.branch(k): b["logits"] for k, b in enumerate(branches)}
    gate = build_gate(trunk.shape[1:], len(branches), sync_batchnorm=sync_batchnorm)(trunk)
    outputs[heads.ENSEMBLE] = GatedSum(dtype="float32", name=heads.ENSEMBLE)([gate, *outputs.values()])
    return DistillationModel(images, outputs, name="one")


def build_gate(feature_shape: Sequence[int], num_branches: int, *, sync_batchnorm: bool) -> keras.Model:
    """Trunk features -> per-example branch weights g (softmax over K): GAP -> dense(K) -> BN -> ReLU -> softmax."""
    features = keras.Input(tuple(feature_shape), name="trunk_features")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = layers.dense(x, num_branches, name="dense")
    x = layers.batch_norm(sync=sync_batchnorm, name="bn")(x)
    x = layers.relu("relu")(x)
    weights = keras.layers.Softmax(dtype="float32", name="softmax")(x)
    return keras.Model(features, weights, name="gate")


@keras.saving.register_keras_serializable(package="ffl_tf", name="GatedSum")
class GatedSum(keras.layers.Layer):
    """[g ([batch, K]), z_1, ..., z_K] -> sum_k g[:, k] * z_k: ONE's teacher logits."""

    def call(self, inputs):
        gate, *logits = inputs
        return ops.sum(ops.expand_dims(gate, -1) * ops.stack(logits, axis=1), axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


def one_loss(branch_logits: Sequence, teacher_logits, labels, *, temperature: float, kd_weight, sample_weight=None):
    """ONE's loss and its parts `ce_branches`, `ce_ensemble` (CE of the gated teacher) and `kd_branches`."""
    parts = {
        "ce_branches": sum(cross_entropy(z, labels, sample_weight) for z in branch_logits),
        "ce_ensemble": cross_entropy(teacher_logits, labels, sample_weight),
        "kd_branches": sum(kl_divergence(teacher_logits, z, temperature, sample_weight) for z in branch_logits),
    }
    return parts["ce_branches"] + parts["ce_ensemble"] + kd_weight * parts["kd_branches"], parts


def loss(logits: dict, labels, *, kd_weight, temperature: float, sample_weight=None) -> tuple:
    """`one_loss` on a model's heads; the teacher is its `ensemble` head."""
    return one_loss(
        branch_logits(logits), logits[heads.ENSEMBLE], labels, temperature=temperature, kd_weight=kd_weight,
        sample_weight=sample_weight,
    )


METHOD = Method(
    name="one",
    title="ONE: on-the-fly native ensemble (Lan, Zhu, Gong, NeurIPS 2018)",
    defaults=DEFAULTS,
    validate=validate,
    build=build,
    loss=loss,
    heads=branches_and_ensemble,
    headline=constant(heads.ENSEMBLE),
    loss_settings=("temperature",),
    comparison_settings=("shared_stages", "rampup_epochs"),
)
