"""Calibration and branch diversity: expected calibration error (ECE) and the branches' disagreement.

Both are written once, with `keras.ops`, so the same code serves the per-epoch evaluation metrics of
`DistillationModel` (tensors, inside the test step) and `python -m ffl_tf.evaluate` (NumPy arrays).

ECE (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks"): the confidence of a prediction
is its top-1 probability; the predictions are put in `NUM_BINS` equal-width bins by confidence, bin b
holding b/M < confidence <= (b+1)/M, and

    ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| = (1/n) sum_b |sum_{i in B_b} correct_i - sum_{i in B_b} conf_i|

so three sums per bin (examples, confidence, correct) are all it needs. Sums add up across batches and
across replicas, which is what makes the metric exact under any distribution strategy. Bin edges are
compared in the confidences' own dtype.

Disagreement of two branches: the fraction of images on which their top-1 classes differ; the mean over
all pairs of branches measures how diverse the branches that distil from each other stay.
"""

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

# Guo et al.'s number of bins.
NUM_BINS = 15


def bin_sums(predictions, labels, *, num_bins: int = NUM_BINS, sample_weight=None, from_logits: bool = True):
    """Per-bin sums [3, num_bins]: (weight of the examples, their confidences, their correct predictions).

    Args:
        predictions: logits (or probabilities with `from_logits=False`), [batch, classes].
        labels: integer class ids, [batch].
        num_bins: equal-width confidence bins over (0, 1].
        sample_weight: optional per-example weights, [batch] (0 = padding, left out).
        from_logits: whether `predictions` are logits (softmax is applied) or probabilities.
    """
    probabilities = ops.softmax(predictions, axis=-1) if from_logits else ops.convert_to_tensor(predictions)
    confidence = ops.max(probabilities, axis=-1)
    dtype = confidence.dtype
    correct = ops.cast(ops.equal(ops.argmax(probabilities, axis=-1), ops.cast(labels, "int64")), dtype)
    weight = ops.ones_like(confidence) if sample_weight is None else ops.cast(sample_weight, dtype)
    inner_edges = ops.cast(np.arange(1, num_bins) / num_bins, dtype)
    index = ops.sum(ops.cast(ops.expand_dims(confidence, -1) > inner_edges, "int32"), axis=-1)
    in_bin = ops.one_hot(index, num_bins, dtype=dtype)  # [batch, bins]
    per_example = ops.stack([weight, weight * confidence, weight * correct])  # [3, batch]
    return ops.matmul(per_example, in_bin)


def ece_from_bins(bins):
    """ECE from `bin_sums` (summed over any number of batches); 0 when there are no examples."""
    return ops.divide_no_nan(ops.sum(ops.abs(bins[2] - bins[1])), ops.sum(bins[0]))


def expected_calibration_error(
    predictions, labels, *, num_bins: int = NUM_BINS, sample_weight=None, from_logits: bool = True
) -> float:
    """ECE of one batch of predictions, as a float (see `bin_sums` for the arguments)."""
    bins = bin_sums(predictions, labels, num_bins=num_bins, sample_weight=sample_weight, from_logits=from_logits)
    return float(ops.convert_to_numpy(ece_from_bins(bins)))


def pairwise_differences(branch_logits: Sequence):
    """[K, K, batch]: 1 where branches j and k predict different top-1 classes for an example, else 0."""
    predictions = ops.stack([ops.argmax(logits, axis=-1) for logits in branch_logits])  # [K, batch]
    return ops.cast(ops.not_equal(ops.expand_dims(predictions, 1), ops.expand_dims(predictions, 0)), "float32")


def disagreement_per_example(branch_logits: Sequence):
    """[batch]: the fraction of pairs of branches whose top-1 classes differ on each example (K >= 2)."""
    k = len(branch_logits)
    return ops.sum(pairwise_differences(branch_logits), axis=(0, 1)) / (k * (k - 1))


def pairwise_disagreement(branch_logits: Sequence, sample_weight=None) -> np.ndarray:
    """[K, K] NumPy: the (weighted) fraction of examples on which branches j and k disagree."""
    differences = pairwise_differences(branch_logits)
    weight = ops.ones(ops.shape(differences)[-1:]) if sample_weight is None else ops.cast(sample_weight, "float32")
    return ops.convert_to_numpy(ops.divide_no_nan(ops.sum(differences * weight, axis=-1), ops.sum(weight)))


@keras.saving.register_keras_serializable(package="ffl_tf", name="ExpectedCalibrationError")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Streaming ECE: accumulates `bin_sums` (one [3, num_bins] variable) and returns `ece_from_bins`.

    Its state is a sum over examples, so summing it over replicas (as `DistillationModel` does before
    computing results) gives exactly the single-device value.

    Example:

    ```python
    metric = ExpectedCalibrationError(name="ece_fused")
    metric.update_state(labels, logits, sample_weight=weights)  # any number of batches
    ece = float(metric.result())
    ```
    """

    def __init__(self, num_bins: int = NUM_BINS, *, from_logits: bool = True, name: str = "ece", dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_bins = num_bins
        self.from_logits = from_logits
        self.bins = self.add_variable(shape=(3, num_bins), initializer="zeros", name="bins")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        bins = bin_sums(y_pred, y_true, num_bins=self.num_bins, sample_weight=sample_weight,
                        from_logits=self.from_logits)
        self.bins.assign_add(ops.cast(bins, self.bins.dtype))

    def result(self):
        return ece_from_bins(self.bins)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "num_bins": self.num_bins, "from_logits": self.from_logits}
