"""Networks trained alone (ffl_tf/methods/vanilla.py): the loss, one network's heads and size, real-image
training, exports and two replicas."""

import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.export import checks
from ffl_tf.methods import vanilla
from ffl_tf.model.distillation import parameter_counts
from tests.methods import helpers
from tests.model.test_losses import np_cross_entropy


@pytest.mark.parametrize("k", [1, 3])
def test_loss_is_the_sum_of_the_cross_entropies(k):
    logits, labels = helpers.random_logits(k)
    heads = {f"branch_{i}": z for i, z in enumerate(logits)}
    if k > 1:
        heads["ensemble"] = np.mean(logits, axis=0)  # a head, not a loss term
    expected = sum(np_cross_entropy(z, labels) for z in logits)
    for kd_weight in (0.0, 1.0):
        total, parts = methods.loss_fn("vanilla")(heads, labels, kd_weight=kd_weight)
        np.testing.assert_allclose(total, expected, rtol=1e-5)
        assert list(parts) == ["ce_branches"]


def test_one_resnet32_alone():
    model = vanilla.build(["resnet32"], 100, (32, 32, 3))
    assert list(model.output) == ["branch_0"]
    assert parameter_counts(model) == {"total": 472_756, "branches": 472_756}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, cifar10_sample) -> helpers.SampleRun:
    return helpers.train_on_sample("vanilla", ["resnet8"], tmp_path_factory.mktemp("vanilla"), cifar10_sample)


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory, squares_folder) -> helpers.SampleRun:
    """For the exports, which need a trained run rather than real images: 20 steps on the generated squares."""
    path = tmp_path_factory.mktemp("vanilla_squares")
    return helpers.train_on_sample("vanilla", ["resnet8"], path, squares_folder, epochs=1)


@pytest.mark.real_images
def test_training_on_real_images_lowers_the_loss(sample_run):
    history = sample_run.history
    assert history["loss"][-1] < 0.95 * history["loss"][0]
    assert history["acc_branch_0"][-1] > 0.2  # chance is 0.1


def test_the_network_exports_and_there_is_no_ensemble(squares_run, tmp_path):
    helpers.check_saved_model_export(squares_run, "branch_0", tmp_path / "serving")
    helpers.check_tflite_export(squares_run, "branch_0", tmp_path / "branch_0.tflite")
    with pytest.raises(checks.ExportError, match="--head=ensemble is not a head of this run; choose one of: branch_0"):
        helpers.check_tflite_export(squares_run, "ensemble", tmp_path / "ensemble.tflite")


def test_two_replicas_match_one_device(two_cpu_replicas):
    helpers.check_two_replicas_match_one_device(two_cpu_replicas, "vanilla", ["resnet8"], 0)
