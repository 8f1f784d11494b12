"""ffl_tf.losses against a NumPy reference of the losses in docs/method.md."""

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf.model import losses


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_cross_entropy(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kl(teacher, student, t):
    log_q, log_p = np_log_softmax(teacher / t), np_log_softmax(student / t)
    return t**2 * (np.exp(log_q) * (log_q - log_p)).sum(axis=-1).mean()


def np_ffl_loss(branches, fused, y, t, w):
    ensemble = np.mean(branches, axis=0)
    ce = sum(np_cross_entropy(z, y) for z in branches) + np_cross_entropy(fused, y)
    kd = sum(np_kl(fused, z, t) for z in branches) + np_kl(ensemble, fused, t)
    return ce + w * kd


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    branches = [rng.normal(scale=3.0, size=(16, 10)).astype("float32") for _ in range(3)]
    fused = rng.normal(scale=3.0, size=(16, 10)).astype("float32")
    labels = rng.integers(0, 10, 16).astype("int32")
    return branches, fused, labels


@pytest.mark.parametrize("temperature", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("kd_weight", [0.0, 0.3, 1.0])
def test_ffl_loss_matches_numpy_reference(logits, temperature, kd_weight):
    branches, fused, labels = logits
    total, parts = losses.ffl_loss(branches, fused, labels, temperature=temperature, kd_weight=kd_weight)
    expected = np_ffl_loss(branches, fused, labels, temperature, kd_weight)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    np.testing.assert_allclose(float(parts["ce_fused"]), np_cross_entropy(fused, labels), rtol=1e-5)
    np.testing.assert_allclose(
        float(parts["kd_fused"]), np_kl(np.mean(branches, axis=0), fused, temperature), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(parts["kd_branches"]), sum(np_kl(fused, z, temperature) for z in branches), rtol=1e-5
    )
    assert set(parts) == set(losses.FFL_PARTS)


def test_kl_is_scaled_by_temperature_squared(logits):
    branches, fused, _ = logits
    # Scaling both logits by T makes the softened distributions those of T = 1; only T^2 remains.
    kl_1 = float(losses.kl_divergence(fused, branches[0], 1.0))
    kl_4 = float(losses.kl_divergence(4.0 * fused, 4.0 * branches[0], 4.0))
    np.testing.assert_allclose(kl_4, 16.0 * kl_1, rtol=1e-5)
    assert float(losses.kl_divergence(fused, fused, 3.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "epoch, expected",
    [(0.0, np.exp(-5.0)), (40.0, np.exp(-1.25)), (80.0, 1.0), (200.0, 1.0), (-1.0, np.exp(-5.0))],
)
def test_rampup_weight(epoch, expected):
    assert float(losses.rampup_weight(epoch, 80.0)) == pytest.approx(expected, rel=1e-6)


def test_rampup_weight_without_rampup_is_one():
    assert float(losses.rampup_weight(0.0, 0.0)) == 1.0


def test_teachers_receive_no_gradient_from_kd_terms(logits):
    branches, fused, _ = logits
    teacher = tf.Variable(fused)
    student = tf.Variable(branches[0])
    with tf.GradientTape(persistent=True) as tape:
        kl = losses.kl_divergence(teacher, student, 3.0)
    assert tape.gradient(kl, teacher) is None
    assert np.abs(tape.gradient(kl, student).numpy()).max() > 0


def test_ffl_kd_terms_do_not_train_their_teachers(logits):
    branches, fused, labels = logits
    z_b = [tf.Variable(z) for z in branches]
    z_f = tf.Variable(fused)
    with tf.GradientTape(persistent=True) as tape:
        _, parts = losses.ffl_loss(z_b, z_f, labels, temperature=3.0, kd_weight=1.0)
    # KL(z_f -> z_k): teacher z_f gets nothing, students z_k do.
    assert tape.gradient(parts["kd_branches"], z_f) is None
    assert all(np.abs(tape.gradient(parts["kd_branches"], z).numpy()).max() > 0 for z in z_b)
    # KL(z_e -> z_f): the ensemble teacher passes nothing back to the branches.
    assert all(tape.gradient(parts["kd_fused"], z) is None for z in z_b)
    assert np.abs(tape.gradient(parts["kd_fused"], z_f).numpy()).max() > 0


def test_cross_entropy_matches_numpy(logits):
    branches, _, labels = logits
    assert float(losses.cross_entropy(branches[0], labels)) == pytest.approx(
        np_cross_entropy(branches[0], labels), rel=1e-6
    )


def test_l2_penalty_matches_pytorch_weight_decay_gradient():
    w = tf.Variable(np.arange(6, dtype="float32").reshape(2, 3))
    with tf.GradientTape() as tape:
        penalty = losses.l2_penalty([w], 1e-4)
    assert float(penalty) == pytest.approx(0.5 * 1e-4 * np.sum(np.arange(6) ** 2), rel=1e-6)
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), 1e-4 * w.numpy(), rtol=1e-6)


def test_sample_weight_restricts_every_loss_to_the_weighted_examples(logits):
    """Padding (weight 0) changes nothing: the weighted losses equal the losses of the real examples alone."""
    branches, fused, labels = logits
    weight = np.array([1.0] * 11 + [0.0] * 5, "float32")
    total, parts = losses.ffl_loss(branches, fused, labels, temperature=3.0, kd_weight=0.7, sample_weight=weight)
    real = [z[:11] for z in branches]
    expected_total, expected_parts = losses.ffl_loss(real, fused[:11], labels[:11], temperature=3.0, kd_weight=0.7)
    np.testing.assert_allclose(float(total), np_ffl_loss(real, fused[:11], labels[:11], 3.0, 0.7), rtol=1e-5)
    for name in losses.FFL_PARTS:
        np.testing.assert_allclose(float(parts[name]), float(expected_parts[name]), rtol=1e-5, err_msg=name)
    # A batch of padding only (a replica's share of the last evaluation batch) gives 0, not NaN.
    nothing = np.zeros(16, "float32")
    assert float(losses.cross_entropy(fused, labels, nothing)) == 0.0


@pytest.mark.parametrize("to_fused, to_branches", [(False, True), (True, False), (False, False)])
def test_ablations_drop_their_distillation_term(logits, to_fused, to_branches):
    branches, fused, labels = logits
    total, parts = losses.ffl_loss(branches, fused, labels, temperature=3.0, kd_weight=0.5,
                                   distill_to_fused=to_fused, distill_to_branches=to_branches)
    kd = to_fused * np_kl(np.mean(branches, axis=0), fused, 3.0) + to_branches * sum(np_kl(fused, z, 3.0)
                                                                                     for z in branches)
    ce = sum(np_cross_entropy(z, labels) for z in branches) + np_cross_entropy(fused, labels)
    np.testing.assert_allclose(float(total), ce + 0.5 * kd, rtol=1e-5)
    assert float(parts["kd_fused"]) > 0 and float(parts["kd_branches"]) > 0  # still reported


def test_ffl_loss_uses_the_given_ensemble(logits):
    branches, fused, labels = logits
    ensemble = branches[0]  # not the mean: the loss must take what the model computed
    _, parts = losses.ffl_loss(branches, fused, labels, temperature=3.0, kd_weight=1.0, ensemble=ensemble)
    np.testing.assert_allclose(float(parts["kd_fused"]), np_kl(branches[0], fused, 3.0), rtol=1e-5)
