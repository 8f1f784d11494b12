"""The private-Keras workarounds: loss scaling under MirroredStrategy (an overflow on any replica skips the step on
all of them) and the Keras version check."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.utils import keras_compat
from ffl_tf.utils.keras_compat import ReplicaConsistentLossScaleOptimizer


def one_step(strategy, optimizer_class, bad_replica: int | None) -> tuple[np.ndarray, float, int]:
    """One loss-scaled SGD step of sum(w * x) on two replicas; `bad_replica` gets an inf input."""
    with strategy.scope():
        w = keras.Variable(np.ones(3, "float32"), name="w")
        optimizer = optimizer_class(keras.optimizers.SGD(0.1))
        optimizer.build([w])

    @tf.function
    def step(x):
        def replica_step(x):
            with tf.GradientTape() as tape:
                scaled_loss = optimizer.scale_loss(tf.reduce_sum(w * x) / 2)
            optimizer.apply(tape.gradient(scaled_loss, [w]), [w])

        strategy.run(replica_step, args=(x,))

    rows = np.ones((2, 3), "float32")
    if bad_replica is not None:
        rows[bad_replica, 0] = np.inf
    for batch in strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(rows).batch(2)):
        step(batch)
    return w.numpy(), float(optimizer.dynamic_scale.numpy()), int(optimizer.iterations.numpy())


@pytest.mark.parametrize("bad_replica", [0, 1])
def test_an_overflow_on_any_replica_skips_the_step_and_halves_the_scale(two_cpu_replicas, bad_replica):
    weights, scale, iterations = one_step(two_cpu_replicas, ReplicaConsistentLossScaleOptimizer, bad_replica)
    np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])
    assert scale == 2.0**15 / 2 and iterations == 0


def test_keras_wrapper_applies_an_overflow_on_the_second_replica(two_cpu_replicas):
    """Why the subclass exists: if this starts failing, Keras fixed it and the subclass can go."""
    weights, scale, iterations = one_step(two_cpu_replicas, keras.optimizers.LossScaleOptimizer, bad_replica=1)
    assert not np.isfinite(weights).all() and scale == 2.0**15 and iterations == 1


def test_finite_gradients_are_applied_unscaled(two_cpu_replicas):
    weights, scale, iterations = one_step(two_cpu_replicas, ReplicaConsistentLossScaleOptimizer, bad_replica=None)
    np.testing.assert_allclose(weights, 1.0 - 0.1 * 1.0)  # d/dw of the mean over replicas of sum(w * x)
    assert scale == 2.0**15 and iterations == 1


def test_keras_warns_skipping_for_a_checkpoint_of_another_network_and_strict_loading_refuses(tmp_path):
    """Canary of `load_weights_strictly`: Keras's warning text ("Skipping ...") is what it turns into an error."""
    smaller = build_ffl_model(["resnet8"] * 2, 10, (8, 8, 3), shared_stages=1)
    larger = build_ffl_model(["resnet14"] * 2, 10, (8, 8, 3), shared_stages=1)
    path = str(tmp_path / "smaller.weights.h5")
    smaller.save_weights(path)
    with pytest.warns(UserWarning, match="Skipping nested container"), pytest.raises(ValueError):
        larger.load_weights(path)
    with pytest.raises(ValueError, match="smaller.weights.h5 lacks some of the model's layers"):
        keras_compat.load_weights_strictly(larger, path)


def test_a_mean_metric_keeps_its_weighted_sum_and_weight_in_total_and_count():
    """Canary of `mean_state`: the undocumented variables the train step all-reduces."""
    mean = keras.metrics.Mean()
    mean.update_state([1.0, 3.0], sample_weight=[1.0, 3.0])
    total, count = keras_compat.mean_state(mean)
    assert float(total) == 10.0 and float(count) == 4.0 and float(mean.result()) == 2.5
