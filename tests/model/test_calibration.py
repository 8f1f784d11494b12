"""Expected calibration error and branch disagreement: against NumPy references, streamed with padding, and
as evaluation metrics of DistillationModel, exact under two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.data import pipeline
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.model import calibration
from tests.runs.test_distribution import in_memory_source


def reference_ece(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15, weights=None) -> float:
    """Guo et al.'s definition, bin by bin: bin b holds b/M < confidence <= (b+1)/M."""
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, float)
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    dtype = probabilities.dtype.type
    total = 0.0
    for b in range(num_bins):
        low, high = dtype(b / num_bins), dtype((b + 1) / num_bins)
        members = (confidence > low) & (confidence <= high) & (weights > 0)
        if members.any():
            w = weights[members]
            accuracy = np.sum(w * correct[members]) / w.sum()
            mean_confidence = np.sum(w * confidence[members]) / w.sum()
            total += w.sum() * abs(accuracy - mean_confidence)
    return total / weights.sum()


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_logits(n=200, classes=10, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((n, classes))), rng.integers(0, classes, n)


def test_ece_matches_the_numpy_reference_on_fixed_logits():
    logits, labels = random_logits()
    expected = reference_ece(softmax(logits), labels)
    assert 0.0 < expected < 1.0
    assert calibration.expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-9)
    weights = np.random.default_rng(1).uniform(0.0, 2.0, len(labels))
    assert calibration.expected_calibration_error(logits, labels, sample_weight=weights) == pytest.approx(
        reference_ece(softmax(logits), labels, weights=weights), abs=1e-9)


def test_confidence_on_a_bin_edge_belongs_to_the_lower_bin_and_empty_bins_count_for_nothing():
    # Confidences 9/15 (the upper edge of bin 8), 9/15 again, and 10/15 (bin 9); the other 13 bins are empty.
    probabilities = np.array([[0.6, 0.4, 0.0], [0.6, 0.0, 0.4], [2 / 3, 1 / 3, 0.0]])
    labels = np.array([0, 1, 0])  # right, wrong, right
    # Bin 8: |1 correct - 1.2 confidence| = 0.2; bin 9: |1 - 2/3|. (A lower-closed bin 9 would hold all three.)
    expected = (0.2 + 1 / 3) / 3
    assert reference_ece(probabilities, labels) == pytest.approx(expected)
    assert calibration.expected_calibration_error(probabilities, labels, from_logits=False) == pytest.approx(expected)
    # In float32 the edges are float32 too, so 9/15 rounded to float32 still sits on its edge.
    as_float32 = probabilities.astype(np.float32)
    metric = calibration.ExpectedCalibrationError(from_logits=False)
    metric.update_state(labels, as_float32)
    assert float(metric.result()) == pytest.approx(reference_ece(as_float32, labels), rel=1e-6)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    # A confidence of exactly 1 is in the last bin; a perfectly confident right answer costs nothing.
    assert calibration.expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0]), from_logits=False) == 0.0
    # No examples (all padding): 0, not NaN.
    assert calibration.expected_calibration_error(probabilities, labels, sample_weight=np.zeros(3),
                                                  from_logits=False) == 0.0


def test_the_metric_over_padded_batches_equals_the_function_on_the_real_examples():
    logits, labels = random_logits(n=70, seed=2)
    logits = logits.astype(np.float32)
    metric = calibration.ExpectedCalibrationError()
    garbage, garbage_labels = random_logits(n=10, seed=3)
    for start in range(0, 70, 32):  # batches of 32, 32, 6, each padded with 10 examples of weight 0
        batch = slice(start, start + 32)
        real = len(labels[batch])
        metric.update_state(np.concatenate([labels[batch], garbage_labels]),
                            np.concatenate([logits[batch], garbage.astype(np.float32)]),
                            sample_weight=np.concatenate([np.ones(real), np.zeros(10)]))
    expected = calibration.expected_calibration_error(logits, labels)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    assert float(metric.result()) == pytest.approx(reference_ece(softmax(logits.astype(np.float64)), labels),
                                                   rel=1e-4)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def reference_disagreement(branch_logits: list[np.ndarray]) -> np.ndarray:
    predictions = [z.argmax(axis=-1) for z in branch_logits]
    return np.array([[np.mean(p != q) for q in predictions] for p in predictions])


def test_disagreement_matches_numpy():
    branch_logits = [random_logits(n=50, classes=4, seed=s, scale=1.0)[0] for s in range(3)]
    expected = reference_disagreement(branch_logits)
    assert expected[0, 1] > 0
    np.testing.assert_allclose(calibration.pairwise_disagreement(branch_logits), expected, atol=1e-7)
    per_example = keras.ops.convert_to_numpy(calibration.disagreement_per_example(branch_logits))
    assert per_example.shape == (50,)
    assert per_example.mean() == pytest.approx(np.mean([expected[0, 1], expected[0, 2], expected[1, 2]]))
    weights = np.r_[np.ones(25), np.zeros(25)]
    np.testing.assert_allclose(calibration.pairwise_disagreement(branch_logits, weights),
                               reference_disagreement([z[:25] for z in branch_logits]), atol=1e-7)


def evaluate(strategy, initial_weights, source):
    with strategy.scope():
        model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
        model.set_weights(initial_weights)
        model.compile(keras.optimizers.SGD(0.1), distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=1,
                      rampup_epochs=1.0, weight_decay=1e-4)
    eval_ds, steps = pipeline.distribute_eval(strategy, source, global_batch_size=16)
    return model, model.evaluate(eval_ds, steps=steps, verbose=0, return_dict=True)


def test_evaluation_metrics_under_two_replicas_equal_one_device_and_numpy(two_cpu_replicas):
    rng = np.random.default_rng(0)
    # 17 images in batches of 16: the second batch is one real image and 15 of padding (weight 0).
    images = rng.integers(0, 256, (17, 16, 16, 3)).astype("uint8")
    labels = rng.integers(0, 10, 17).astype("int32")
    source = in_memory_source(images, labels)
    initial = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1).get_weights()
    model, one = evaluate(tf.distribute.get_strategy(), initial, source)
    _, two = evaluate(two_cpu_replicas, initial, source)

    logits = {head: np.asarray(value, np.float64) for head, value in model.predict(images, verbose=0).items()}
    assert set(one) >= {"ece_branch_0", "ece_branch_1", "ece_ensemble", "ece_fused", "disagreement"}
    for head, z in logits.items():
        assert one[f"ece_{head}"] == pytest.approx(reference_ece(softmax(z), labels), rel=1e-4, abs=1e-6)
    assert one["disagreement"] == pytest.approx(reference_disagreement([logits["branch_0"], logits["branch_1"]])[0, 1])
    for name, value in one.items():
        np.testing.assert_allclose(two[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_train_step_logs_no_evaluation_metric():
    model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
    model.compile(keras.optimizers.SGD(0.1), distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=1,
                  rampup_epochs=1.0, weight_decay=1e-4, run_eagerly=True)
    images, labels = np.zeros((4, 16, 16, 3), "uint8"), np.zeros(4, "int32")
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert not any(name.startswith("ece_") or name == "disagreement" for name in logs)
    assert all(float(np.sum(m.variables[0])) == 0.0 for m in model.evaluation_metrics.values())
