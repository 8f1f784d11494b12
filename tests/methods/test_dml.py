"""DML (ffl_tf/methods/dml.py): its loss against NumPy, stopped teachers, sizes, real-image training, exports and
two replicas."""

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.export import checks
from ffl_tf.methods import dml
from ffl_tf.model.distillation import parameter_counts
from tests.methods import helpers
from tests.model.test_losses import np_cross_entropy, np_kl


def np_dml_loss(logits, labels, temperature, kd_weight):
    """docs/method.md (M8): sum_k [CE(z_k) + w / (K - 1) sum_{j != k} KL_T(z_j -> z_k)]."""
    k = len(logits)
    ce = sum(np_cross_entropy(z, labels) for z in logits)
    kd = sum(np_kl(logits[j], logits[i], temperature) for i in range(k) for j in range(k) if j != i) / (k - 1)
    return ce + kd_weight * kd, ce, kd


@pytest.mark.parametrize("temperature, kd_weight", [(1.0, 1.0), (3.0, 0.4)])
def test_loss_of_three_networks_matches_numpy(temperature, kd_weight):
    logits, labels = helpers.random_logits(3)
    heads = {f"branch_{k}": z for k, z in enumerate(logits)} | {"ensemble": np.mean(logits, axis=0)}
    total, parts = methods.loss_fn("dml", temperature=temperature)(heads, labels, kd_weight=kd_weight)
    expected, ce, kd = np_dml_loss(logits, labels, temperature, kd_weight)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    np.testing.assert_allclose(parts["ce_branches"], ce, rtol=1e-5)
    np.testing.assert_allclose(parts["kd_branches"], kd, rtol=1e-5)


def test_every_network_learns_only_as_a_student():
    """Each KL term's teacher is stopped: network k's gradient from the distillation term is its student
    gradient only, the mean over the other networks of T (p_T(z_k) - p_T(z_j)) / batch."""
    logits, labels = helpers.random_logits(3)
    variables = [tf.Variable(z) for z in logits]
    with tf.GradientTape() as tape:
        _, parts = dml.dml_loss(variables, labels, temperature=2.0, kd_weight=1.0)
    gradients = tape.gradient(parts["kd_branches"], variables)
    for k, gradient in enumerate(gradients):
        expected = sum(helpers.np_student_gradient(logits[j], logits[k], 2.0) for j in range(3) if j != k) / 2
        assert np.abs(expected).max() > 1e-3
        np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


def test_networks_of_different_architectures_and_the_loss_on_their_heads():
    model = dml.build(["resnet8", "wrn16_2", "mobilenetv2_050"], 10, (32, 32, 3))
    images, labels = helpers.random_images(8, 32)
    heads = {name: value.numpy() for name, value in model(images, training=False).items()}
    assert sorted(heads) == ["branch_0", "branch_1", "branch_2", "ensemble"]
    logits = [heads[f"branch_{k}"] for k in range(3)]
    np.testing.assert_allclose(heads["ensemble"], np.mean(logits, axis=0), rtol=1e-5, atol=1e-6)
    total, _ = methods.loss_fn("dml")(heads, labels, kd_weight=1.0)
    np.testing.assert_allclose(total, np_dml_loss(logits, labels, 1.0, 1.0)[0], rtol=1e-5)


def test_two_resnet32_have_twice_the_parameters_of_one():
    model = dml.build(["resnet32", "resnet32"], 100, (32, 32, 3))
    assert parameter_counts(model) == {"total": 2 * 472_756, "branches": 2 * 472_756}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, cifar10_sample) -> helpers.SampleRun:
    return helpers.train_on_sample("dml", ["resnet8", "resnet8"], tmp_path_factory.mktemp("dml"), cifar10_sample)


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory, squares_folder) -> helpers.SampleRun:
    """For the exports, which need a trained run rather than real images: 20 steps on the generated squares."""
    path = tmp_path_factory.mktemp("dml_squares")
    return helpers.train_on_sample("dml", ["resnet8", "resnet8"], path, squares_folder, epochs=1)


@pytest.mark.real_images
def test_training_on_real_images_lowers_the_loss(sample_run):
    history = sample_run.history
    assert history["loss"][-1] < 0.95 * history["loss"][0]
    assert history["acc_branch_mean"][-1] > 0.2  # chance is 0.1
    assert history["ce_branches"][-1] < history["ce_branches"][0]
    assert history["kd_branches"][-1] > 0


def test_heads_export_and_fused_is_refused(squares_run, tmp_path):
    helpers.check_saved_model_export(squares_run, "ensemble", tmp_path / "serving")
    helpers.check_tflite_export(squares_run, "branch_1", tmp_path / "branch_1.tflite")
    with pytest.raises(checks.ExportError, match="--head=fused is not a head of this run; choose one of: "
                                                 "branch_0, branch_1, ensemble"):
        helpers.check_saved_model_export(squares_run, "fused", tmp_path / "fused")
    assert not (tmp_path / "fused").exists()


def test_two_replicas_match_one_device(two_cpu_replicas):
    helpers.check_two_replicas_match_one_device(two_cpu_replicas, "dml", ["resnet8", "resnet8"], 0)
