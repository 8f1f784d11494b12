"""DML (Zhang et al., CVPR 2018, "Deep Mutual Learning"): K independent networks, each distilled from the others.

L = sum_k [ CE(z_k, y) + w(e) / (K - 1) * sum_{j != k} KL_T(z_j -> z_k) ], every teacher stopped. The paper
updates the networks one after the other; here all of them are updated from one forward pass, as most
reimplementations do: each network's gradient is the same, only the other networks' logits it learns
from are those before this step's update instead of after it.
"""

import functools
from collections.abc import Sequence

from ffl_tf.methods import vanilla
from ffl_tf.methods.declaration import Method, branch_logits, branches_and_ensemble, constant
from ffl_tf.model import heads
from ffl_tf.model.losses import cross_entropy, kl_divergence

# The paper's settings: T = 1, no ramp-up, SGD with Nesterov momentum.
DEFAULTS = {"temperature": 1.0, "rampup_epochs": 0.0, "nesterov": True, "shared_stages": 0}


# K >= 2 independent networks of any architectures, built as the networks trained alone are.
validate = functools.partial(vanilla.validate, method="DML", min_branches=2)
build = functools.partial(vanilla.build, method="DML", min_branches=2)


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
    return dml_loss(branch_logits(logits), labels, temperature=temperature, kd_weight=kd_weight,
                    sample_weight=sample_weight)


METHOD = Method(
    name="dml",
    title="DML: deep mutual learning (Zhang, Xiang, Hospedales, Lu, CVPR 2018)",
    defaults=DEFAULTS,
    validate=validate,
    build=build,
    loss=loss,
    heads=branches_and_ensemble,
    headline=constant(heads.BRANCH_MEAN),
    loss_settings=("temperature",),
)
