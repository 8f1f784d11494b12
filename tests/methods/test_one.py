"""ONE (ffl_tf/methods/one.py): the gate and gated teacher, the loss against NumPy, stopped teachers, the official
size, real-image training, exports and two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.methods import one
from ffl_tf.model.distillation import parameter_counts
from tests.methods import helpers
from tests.model.test_losses import np_cross_entropy, np_kl


def gate_and_branches(model, images) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(g, [z_k], the model's `ensemble` head): what the gated-sum layer receives, and what it returns."""
    inputs = keras.Model(model.input, model.get_layer("ensemble").input)(images, training=False)
    teacher = model(images, training=False)["ensemble"]
    return inputs[0].numpy(), [z.numpy() for z in inputs[1:]], teacher.numpy()


def test_gate_weighs_the_branches_into_the_teacher():
    model = one.build(["resnet8"] * 3, 10, (16, 16, 3), shared_stages=2)
    # A gate far from uniform, so that the gated sum differs from the plain mean.
    dense = model.get_layer("gate").get_layer("dense")
    dense.kernel.assign(np.random.default_rng(0).normal(scale=5.0, size=dense.kernel.shape))
    images, _ = helpers.random_images(8, 16)
    gate, branches, teacher = gate_and_branches(model, images)
    assert gate.shape == (8, 3)
    np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-6)
    assert (gate >= 0).all() and np.abs(gate - 1 / 3).max() > 0.1
    np.testing.assert_allclose(teacher, np.einsum("bk,kbc->bc", gate, np.stack(branches)), rtol=1e-5, atol=1e-5)
    assert np.abs(teacher - np.mean(branches, axis=0)).max() > 1e-2
    heads = model(images, training=False)
    for k in range(3):
        np.testing.assert_allclose(heads[f"branch_{k}"], branches[k], rtol=1e-6)


@pytest.mark.parametrize("temperature, kd_weight", [(3.0, 1.0), (1.0, 0.25)])
def test_loss_matches_numpy(temperature, kd_weight):
    """docs/method.md (M9): sum_k CE(z_k) + CE(z_t) + w sum_k KL_T(z_t -> z_k)."""
    (*branches, teacher), labels = helpers.random_logits(4)
    heads = {f"branch_{k}": z for k, z in enumerate(branches)} | {"ensemble": teacher}
    total, parts = methods.loss_fn("one", temperature=temperature)(heads, labels, kd_weight=kd_weight)
    ce = sum(np_cross_entropy(z, labels) for z in branches)
    kd = sum(np_kl(teacher, z, temperature) for z in branches)
    np.testing.assert_allclose(total, ce + np_cross_entropy(teacher, labels) + kd_weight * kd, rtol=1e-5)
    np.testing.assert_allclose(parts["kd_branches"], kd, rtol=1e-5)
    np.testing.assert_allclose(parts["ce_ensemble"], np_cross_entropy(teacher, labels), rtol=1e-5)


def test_teacher_is_stopped_in_the_distillation_term():
    (*branches, teacher), labels = helpers.random_logits(4)
    z_b, z_t = [tf.Variable(z) for z in branches], tf.Variable(teacher)
    with tf.GradientTape(persistent=True) as tape:
        _, parts = one.one_loss(z_b, z_t, labels, temperature=3.0, kd_weight=1.0)
    assert tape.gradient(parts["kd_branches"], z_t) is None
    for z, logits in zip(z_b, branches):
        expected = helpers.np_student_gradient(teacher, logits, 3.0)
        assert np.abs(expected).max() > 1e-3
        np.testing.assert_allclose(tape.gradient(parts["kd_branches"], z), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(tape.gradient(parts["ce_ensemble"], z_t).numpy()).max() > 0


def test_only_the_teachers_cross_entropy_trains_the_gate():
    model = one.build(["resnet8"] * 2, 10, (16, 16, 3), shared_stages=1)
    images, labels = helpers.random_images(8, 16)
    gate_variables = model.get_layer("gate").trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        _, parts = methods.loss_fn("one")(model(images, training=True), labels, kd_weight=1.0)
    assert all(g is None for g in tape.gradient(parts["kd_branches"], gate_variables))
    kernel_gradient = tape.gradient(parts["ce_ensemble"], model.get_layer("gate").get_layer("dense").kernel)
    assert np.abs(kernel_gradient.numpy()).max() > 0


def test_three_resnet32_branches_have_the_official_size():
    model = one.build(["resnet32"] * 3, 100, (32, 32, 3), shared_stages=2)
    # The gate reads the trunk's 32 channels: dense 32 -> 3 (99) and its batch norm's scale and offset (6).
    assert parameter_counts(model) == {"total": 1_193_189, "branches": 1_193_189 - 105, "gate": 105}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, cifar10_sample) -> helpers.SampleRun:
    return helpers.train_on_sample("one", ["resnet8"] * 3, tmp_path_factory.mktemp("one"), cifar10_sample)


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory, squares_folder) -> helpers.SampleRun:
    """For the exports, which need a trained run rather than real images: 20 steps on the generated squares."""
    path = tmp_path_factory.mktemp("one_squares")
    return helpers.train_on_sample("one", ["resnet8"] * 3, path, squares_folder, epochs=1)


@pytest.mark.real_images
def test_training_on_real_images_lowers_the_loss(sample_run):
    history = sample_run.history
    assert history["loss"][-1] < 0.95 * history["loss"][0]
    assert history["acc_ensemble"][-1] > 0.2  # chance is 0.1
    assert history["ce_ensemble"][-1] < history["ce_ensemble"][0]


def test_gated_ensemble_exports(squares_run, tmp_path):
    helpers.check_saved_model_export(squares_run, "ensemble", tmp_path / "serving")
    helpers.check_tflite_export(squares_run, "ensemble", tmp_path / "ensemble.tflite")


def test_two_replicas_match_one_device(two_cpu_replicas):
    helpers.check_two_replicas_match_one_device(two_cpu_replicas, "one", ["resnet8"] * 2, 2)
