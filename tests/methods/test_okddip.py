"""OKDDip (ffl_tf/methods/okddip.py): the peers' attention targets and the loss against NumPy, gradients through the
teachers as in the official code, the official size, refused layouts, real-image training, exports, two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.methods import okddip
from ffl_tf.model.distillation import parameter_counts
from tests.methods import helpers
from tests.model.test_losses import np_cross_entropy, np_kl


def np_targets(features: list[np.ndarray], logits: list[np.ndarray], query: np.ndarray, key: np.ndarray) -> list:
    """t_i = sum_j softmax_j(q_i . k_j) z_j with q = f W_q, k = f W_k, per example."""
    f = np.stack(features, axis=1)  # [batch, m, C]
    energy = np.einsum("bic,bjc->bij", f @ query, f @ key)
    attention = np.exp(energy - energy.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    targets = np.einsum("bij,bjk->bik", attention, np.stack(logits, axis=1))
    return [targets[:, i] for i in range(len(logits))]


def test_each_peers_target_is_its_attention_weighted_sum_of_the_peers_logits():
    model = okddip.build(["resnet8"] * 4, 10, (16, 16, 3), shared_stages=1)
    attention = model.get_layer("attention")
    rng = np.random.default_rng(0)
    for projection in (attention.query, attention.key):  # far from uniform attention, so a mix-up shows
        projection.kernel.assign(rng.normal(scale=2.0, size=projection.kernel.shape))
    images, _ = helpers.random_images(8, 16)
    inputs = keras.Model(model.input, attention.input)(images, training=False)
    maps, logits = [x.numpy() for x in inputs[:3]], [x.numpy() for x in inputs[3:]]
    expected = np_targets([m.mean(axis=(1, 2)) for m in maps], logits, attention.query.kernel.numpy(),
                          attention.key.kernel.numpy())
    heads = model(images, training=False)
    assert sorted(heads) == ["branch_0", "branch_1", "branch_2", "branch_3", "ensemble", "target_0", "target_1",
                             "target_2"]
    for i in range(3):
        np.testing.assert_allclose(heads[f"target_{i}"], expected[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(heads[f"branch_{i}"], logits[i], rtol=1e-6)
    assert np.abs(expected[0] - np.mean(logits, axis=0)).max() > 1e-2
    np.testing.assert_allclose(heads["ensemble"], np.mean(logits, axis=0), rtol=1e-5, atol=1e-6)  # the peers only


@pytest.mark.parametrize("temperature, kd_weight", [(3.0, 1.0), (1.0, 0.25)])
def test_loss_matches_numpy(temperature, kd_weight):
    """docs/method.md (M10): sum_i CE(z_i) + CE(z_l) + w [sum_i KL_T(t_i -> z_i) + KL_T(mean_i z_i -> z_l)]."""
    (*peers, leader), labels = helpers.random_logits(4, seed=1)
    targets, _ = helpers.random_logits(3, seed=2)
    heads = ({f"branch_{k}": z for k, z in enumerate([*peers, leader])}
             | {f"target_{i}": t for i, t in enumerate(targets)} | {"ensemble": np.mean(peers, axis=0)})
    total, parts = methods.loss_fn("okddip", temperature=temperature)(heads, labels, kd_weight=kd_weight)
    ce = sum(np_cross_entropy(z, labels) for z in [*peers, leader])
    kd_peers = sum(np_kl(t, z, temperature) for t, z in zip(targets, peers))
    kd_leader = np_kl(np.mean(peers, axis=0), leader, temperature)
    np.testing.assert_allclose(total, ce + kd_weight * (kd_peers + kd_leader), rtol=1e-5)
    np.testing.assert_allclose([parts["ce_branches"], parts["kd_peers"], parts["kd_leader"]],
                               [ce, kd_peers, kd_leader], rtol=1e-5)


def test_gradients_flow_through_the_teachers_as_in_the_official_code():
    """Its KL does not detach the teacher: the targets (and through them the projections) and the peers, as the
    leader's teacher, get gradients from the distillation terms."""
    model = okddip.build(["resnet8"] * 3, 10, (16, 16, 3), shared_stages=1)
    images, labels = helpers.random_images(8, 16)
    projections = [model.get_layer("attention").query.kernel, model.get_layer("attention").key.kernel]
    peer_classifier = model.get_layer("branch_0").get_layer("classifier").kernel
    with tf.GradientTape(persistent=True) as tape:
        _, parts = methods.loss_fn("okddip")(model(images, training=True), labels, kd_weight=1.0)
    assert all(np.abs(g.numpy()).max() > 0 for g in tape.gradient(parts["kd_peers"], projections))
    assert np.abs(tape.gradient(parts["kd_leader"], peer_classifier).numpy()).max() > 0
    assert all(g is None for g in tape.gradient(parts["ce_branches"], projections))


def test_four_resnet32_branches_have_the_official_size():
    model = okddip.build(["resnet32"] * 4, 100, (32, 32, 3), shared_stages=2)
    # The official model: stem + stages 1-2, 4 x (stage 3 + classifier), query and key 64 -> 8 without bias.
    assert parameter_counts(model) == {"total": 1_554_272, "branches": 1_554_272 - 1_024, "attention": 1_024}


@pytest.mark.parametrize("backbones, shared_stages, message", [
    (["resnet8"] * 2, 1, "at least 3 branches"),
    (["resnet8"] * 3, 0, "use shared_stages >= 1, got 0"),
])
def test_layouts_without_two_peers_and_a_leader_on_a_trunk_are_refused(backbones, shared_stages, message):
    with pytest.raises(ValueError, match=message):
        okddip.validate(backbones, shared_stages)


def test_declaration_names_the_leader_as_headline_and_four_branches_for_comparisons():
    method = methods.get("okddip")
    assert method.headline(4) == "branch_3" and method.comparison_branches == 4
    assert method.defaults["weight_decay"] == 5e-4 and method.defaults["temperature"] == 3.0


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, cifar10_sample) -> helpers.SampleRun:
    return helpers.train_on_sample("okddip", ["resnet8"] * 3, tmp_path_factory.mktemp("okddip"), cifar10_sample)


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory, squares_folder) -> helpers.SampleRun:
    """For the exports, which need a trained run rather than real images: 20 steps on the generated squares."""
    path = tmp_path_factory.mktemp("okddip_squares")
    return helpers.train_on_sample("okddip", ["resnet8"] * 3, path, squares_folder, epochs=1)


@pytest.mark.real_images
def test_training_on_real_images_lowers_the_loss(sample_run):
    history = sample_run.history
    assert history["loss"][-1] < 0.95 * history["loss"][0]
    assert history["acc_branch_2"][-1] > 0.2  # the leader; chance is 0.1


def test_the_leader_exports(squares_run, tmp_path):
    helpers.check_saved_model_export(squares_run, "branch_2", tmp_path / "serving")
    helpers.check_tflite_export(squares_run, "branch_2", tmp_path / "leader.tflite")


def test_two_replicas_match_one_device(two_cpu_replicas):
    helpers.check_two_replicas_match_one_device(two_cpu_replicas, "okddip", ["resnet8"] * 3, 1)
