"""Online-distillation losses as pure functions of tensors (docs/method.md states them with the paper's equations).

Every loss is a mean over the batch. `sample_weight` (optional, [batch], 1 for real examples and 0 for the
padding that fills an evaluation batch) turns it into the mean over the real examples only.
"""

from collections.abc import Sequence

from keras import ops

FFL_PARTS = ("ce_branches", "ce_fused", "kd_branches", "kd_fused")


def batch_mean(values, sample_weight=None):
    """The mean of per-example `values`, over the examples whose weight is not 0 (0 if there are none)."""
    if sample_weight is None:
        return ops.mean(values)
    weight = ops.cast(sample_weight, values.dtype)
    return ops.divide_no_nan(ops.sum(values * weight), ops.sum(weight))


def rampup_weight(epoch, rampup_epochs: float):
    """Sigmoid ramp-up w(e) = exp(-5 (1 - min(e, R)/R)^2), 1 from epoch R on (and always when R = 0)."""
    if rampup_epochs <= 0:
        return ops.ones_like(ops.convert_to_tensor(epoch, "float32"))
    progress = ops.clip(ops.convert_to_tensor(epoch, "float32") / rampup_epochs, 0.0, 1.0)
    return ops.exp(-5.0 * ops.square(1.0 - progress))


def cross_entropy(logits, labels, sample_weight=None):
    """Mean over the batch of the softmax cross-entropy with integer labels."""
    per_example = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return batch_mean(per_example, sample_weight)


def kl_divergence(teacher_logits, student_logits, temperature: float, sample_weight=None):
    """KL_T(t -> s) = T^2 * mean over the batch of KL(softmax(t/T) || softmax(s/T)); the teacher is stopped."""
    log_q = ops.stop_gradient(ops.log_softmax(teacher_logits / temperature, axis=-1))
    log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    per_example = ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    return temperature**2 * batch_mean(per_example, sample_weight)


def ensemble_logits(branch_logits: Sequence):
    """The branches' ensemble z_e: the mean of their logits."""
    return ops.mean(ops.stack(branch_logits), axis=0)


def ffl_loss(
    branch_logits: Sequence,
    fused_logits,
    labels,
    *,
    temperature: float,
    kd_weight,
    ensemble=None,
    distill_to_fused: bool = True,
    distill_to_branches: bool = True,
    sample_weight=None,
):
    """FFL's loss L (docs/method.md, M5) and its named parts.

    L = sum_k CE(z_k) + CE(z_f) + kd_weight * [sum_k KL_T(z_f -> z_k) + KL_T(z_e -> z_f)].

    Args:
        branch_logits: K `[batch, classes]` tensors z_k.
        fused_logits: the fused classifier's logits z_f.
        labels: integer class ids, `[batch]`.
        temperature: T of the KL terms.
        kd_weight: w(e), the ramp-up weight of both distillation terms.
        ensemble: z_e when the model already computed it; default the mean of `branch_logits`.
        distill_to_fused: keep KL_T(z_e -> z_f) in L (False: the paper's ablation without it).
        distill_to_branches: keep sum_k KL_T(z_f -> z_k) in L (False: the ablation without it).
        sample_weight: optional per-example weights (0 = padding).

    Returns:
        `(L, parts)` with `parts` the terms named in `FFL_PARTS` (all computed, whether in L or not).
    """
    ensemble = ensemble_logits(branch_logits) if ensemble is None else ensemble
    parts = {
        "ce_branches": sum(cross_entropy(z, labels, sample_weight) for z in branch_logits),
        "ce_fused": cross_entropy(fused_logits, labels, sample_weight),
        "kd_branches": sum(kl_divergence(fused_logits, z, temperature, sample_weight) for z in branch_logits),
        "kd_fused": kl_divergence(ensemble, fused_logits, temperature, sample_weight),
    }
    distillation = (parts["kd_branches"] if distill_to_branches else 0.0) + (
        parts["kd_fused"] if distill_to_fused else 0.0
    )
    return parts["ce_branches"] + parts["ce_fused"] + kd_weight * distillation, parts


def l2_penalty(variables: Sequence, weight_decay: float):
    """weight_decay/2 * sum of squared weights: the penalty whose gradient is PyTorch's SGD weight_decay."""
    if not variables or weight_decay == 0:
        return ops.convert_to_tensor(0.0)
    return 0.5 * weight_decay * ops.sum(ops.stack([ops.sum(ops.square(v)) for v in variables]))
