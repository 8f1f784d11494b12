"""FFL as a method (ffl_tf/methods/ffl.py): its loss on a model's heads with the ablation switches, and which
modules each distillation term trains. The loss itself, sizes, training, exports and two replicas are tested in
tests/test_losses.py, tests/test_model.py, tests/export/ and tests/test_distribution.py."""

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.methods import ffl
from tests.methods import helpers
from tests.model.test_losses import np_cross_entropy, np_kl


@pytest.mark.parametrize("to_fused, to_branches", [(True, True), (False, True), (True, False), (False, False)])
def test_loss_on_heads_matches_numpy_with_each_ablation(to_fused, to_branches):
    """docs/method.md (M5); the ensemble teacher is the model's own `ensemble` head."""
    (*branches, ensemble, fused), labels = helpers.random_logits(4)
    heads = {"branch_0": branches[0], "branch_1": branches[1], "ensemble": ensemble, "fused": fused}
    loss = methods.loss_fn("ffl", temperature=2.0, distill_to_fused=to_fused, distill_to_branches=to_branches)
    total, parts = loss(heads, labels, kd_weight=0.5)
    ce = sum(np_cross_entropy(z, labels) for z in branches) + np_cross_entropy(fused, labels)
    kd_branches = sum(np_kl(fused, z, 2.0) for z in branches)
    kd_fused = np_kl(ensemble, fused, 2.0)
    np.testing.assert_allclose(total, ce + 0.5 * (to_branches * kd_branches + to_fused * kd_fused), rtol=1e-5)
    np.testing.assert_allclose(parts["kd_fused"], kd_fused, rtol=1e-5)


def test_the_fusion_module_learns_nothing_from_teaching_the_branches():
    """KL_T(z_f -> z_k) stops its teacher, so it leaves the fusion module alone; KL_T(z_e -> z_f) trains it."""
    model = ffl.build(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
    images, labels = helpers.random_images(8, 16)
    fusion = model.get_layer("fusion").trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        _, parts = methods.loss_fn("ffl")(model(images, training=True), labels, kd_weight=1.0)
    assert all(g is None for g in tape.gradient(parts["kd_branches"], fusion))
    assert max(float(tf.reduce_max(tf.abs(g))) for g in tape.gradient(parts["kd_fused"], fusion)) > 0
