"""MirroredStrategy on two logical CPU devices trains exactly like one device."""

import keras
import numpy as np
import tensorflow as tf

from ffl_tf.ffl_model import build_ffl_model


def train(strategy, initial_weights, images, labels, eval_dataset):
    with strategy.scope():
        model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1, sync_bn=True)
        model.set_weights(initial_weights)
        model.compile(
            keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True), steps_per_epoch=1, rampup_epochs=2.0
        )
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0, shuffle=False)
    evaluation = model.evaluate(eval_dataset, verbose=0, return_dict=True)
    return model.get_weights(), history.history, evaluation


def test_two_replicas_match_one_device(two_cpu_replicas):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Two epochs of one step: momentum and per-epoch metrics are exercised, while float rounding (summing
    # two half batches instead of one batch) has no room to grow chaotically over many steps.
    images = rng.integers(0, 256, (16, 16, 16, 3)).astype("uint8")
    labels = rng.integers(0, 10, 16).astype("int32")
    initial = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1, sync_bn=True).get_weights()

    # Evaluation on 17 images in batches of 16: the second replica's share of the last batch is empty.
    eval_dataset = tf.data.Dataset.from_tensor_slices(
        (rng.integers(0, 256, (17, 16, 16, 3)).astype("uint8"), rng.integers(0, 10, 17).astype("int32"))
    ).batch(16)

    assert two_cpu_replicas.num_replicas_in_sync == 2
    one_weights, one_history, one_eval = train(tf.distribute.get_strategy(), initial, images, labels, eval_dataset)
    two_weights, two_history, two_eval = train(two_cpu_replicas, initial, images, labels, eval_dataset)

    # Compare what training changed: two replicas must reproduce the one-device update up to reduction
    # order (measured ~1e-6 relative). Gradients not divided by the number of replicas, or BN statistics
    # of half batches, miss it by 10% and more overall.
    updates = [np.linalg.norm(w1 - w0) for w0, w1 in zip(initial, one_weights)]
    errors = [np.linalg.norm(w2 - w1) for w1, w2 in zip(one_weights, two_weights)]
    assert max(updates) > 1e-2  # training really changed the weights
    assert np.linalg.norm(errors) < 1e-3 * np.linalg.norm(updates)
    for error, update in zip(errors, updates):
        assert error <= 1e-2 * update + 1e-6
    for name, values in one_history.items():
        np.testing.assert_allclose(two_history[name], values, rtol=1e-3, atol=1e-4, err_msg=name)
    assert all(np.isfinite(value) for value in two_eval.values())
    for name, value in one_eval.items():
        np.testing.assert_allclose(two_eval[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
