"""FFL's losses (SPEC section 2), as pure functions of tensors."""

from typing import Sequence

from keras import ops

PARTS = ("ce_branches", "ce_fused", "kd_branches", "kd_fused")


def rampup_weight(epoch, rampup_epochs: float):
    """Sigmoid ramp-up w(e) = exp(-5 (1 - min(e, R)/R)^2), 1 from epoch R on (and always when R = 0)."""
    if rampup_epochs <= 0:
        return ops.ones_like(ops.convert_to_tensor(epoch, "float32"))
    progress = ops.clip(ops.convert_to_tensor(epoch, "float32") / rampup_epochs, 0.0, 1.0)
    return ops.exp(-5.0 * ops.square(1.0 - progress))


def cross_entropy(logits, labels):
    """Mean over the batch of the softmax cross-entropy with integer labels."""
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def kl_divergence(teacher_logits, student_logits, temperature: float):
    """T^2 * mean over the batch of KL(softmax(t/T) || softmax(s/T)); the teacher is not trained by it."""
    log_q = ops.stop_gradient(ops.log_softmax(teacher_logits / temperature, axis=-1))
    log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    per_example = ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    return temperature**2 * ops.mean(per_example)


def ensemble_logits(branch_logits: Sequence):
    """The branches' ensemble: the mean of their logits."""
    return ops.mean(ops.stack(branch_logits), axis=0)


def ffl_loss(branch_logits: Sequence, fused_logits, labels, *, temperature: float, kd_weight):
    """FFL's loss L and its named parts.

    L = sum_k CE(z_k) + CE(z_f) + kd_weight * [sum_k KL_T(z_f -> z_k) + KL_T(z_e -> z_f)],
    with z_e the mean of the branch logits. Returns (L, {name: value for name in PARTS}).
    """
    ensemble = ensemble_logits(branch_logits)
    parts = {
        "ce_branches": sum(cross_entropy(z, labels) for z in branch_logits),
        "ce_fused": cross_entropy(fused_logits, labels),
        "kd_branches": sum(kl_divergence(fused_logits, z, temperature) for z in branch_logits),
        "kd_fused": kl_divergence(ensemble, fused_logits, temperature),
    }
    total = parts["ce_branches"] + parts["ce_fused"] + kd_weight * (parts["kd_branches"] + parts["kd_fused"])
    return total, parts


def l2_penalty(variables: Sequence, weight_decay: float):
    """weight_decay/2 * sum of squared weights: the penalty whose gradient is PyTorch's SGD weight_decay."""
    if not variables or weight_decay == 0:
        return ops.convert_to_tensor(0.0)
    return 0.5 * weight_decay * ops.sum(ops.stack([ops.sum(ops.square(v)) for v in variables]))
