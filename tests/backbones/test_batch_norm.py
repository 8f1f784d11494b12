"""The fused batch norm computes what Keras's BatchNormalization computes: outputs, gradients, moving statistics,
and a whole FFL train step (loss, updates, logged metrics), in float32 and mixed_bfloat16."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import methods
from ffl_tf.backbones.batch_norm import BatchNorm, keras_batch_norm
from ffl_tf.methods.ffl import build_ffl_model


def layer_pair(shape):
    """A fused BatchNorm and one computing the Keras way, with the same random (non-trivial) weights."""
    fused = BatchNorm(momentum=0.9, epsilon=1e-5)
    with keras_batch_norm():
        reference = BatchNorm(momentum=0.9, epsilon=1e-5)
    for layer in (fused, reference):
        layer.build(shape)
    rng = np.random.default_rng(1)
    reference.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in reference.weights])
    fused.set_weights(reference.get_weights())
    return fused, reference


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 1e-2)])
def test_outputs_gradients_and_moving_statistics_match_keras(policy, tolerance):
    keras.mixed_precision.set_global_policy(policy)
    try:
        x = np.random.default_rng(0).normal(1.0, 3.0, (16, 8, 8, 12)).astype("float32")
        fused, reference = layer_pair(x.shape)
        assert fused.fused and not reference.fused
        # A loss the normalisation does not make flat (sum(y^2) would be): random per-element weights.
        weights = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
        results = []
        for layer in (fused, reference):
            inputs = tf.cast(x, layer.compute_dtype)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = layer(inputs, training=True)
                loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
            gradients = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
            results.append([outputs, *gradients, layer.moving_mean, layer.moving_variance,
                            layer(inputs, training=False)])
        for name, a, b in zip(["outputs", "d_inputs", "d_gamma", "d_beta", "moving_mean", "moving_variance",
                               "inference outputs"], *results):
            a, b = (np.asarray(tf.cast(t, tf.float32)) for t in (a, b))
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max(), err_msg=name)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_inputs_the_fused_kernel_cannot_take_use_keras_computation():
    fused, reference = layer_pair((6, 3))  # ONE's gate normalises [batch, K]
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), rtol=1e-6)
    assert not BatchNorm(synchronized=True).fused


def test_an_ffl_train_step_is_unchanged():
    """Loss, logged metrics and the updated weights of one step equal Keras's computation's (float rounding)."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (32, 16, 16, 3)).astype("uint8"), rng.integers(0, 10, 32)
    runs = []
    for context in (contextlib.nullcontext(), keras_batch_norm()):
        keras.utils.set_random_seed(0)
        with context:
            model = build_ffl_model(["resnet8", "resnet8"], 10, (16, 16, 3), shared_stages=1)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), distillation_loss=methods.loss_fn("ffl"),
                      steps_per_epoch=4, rampup_epochs=2.0, weight_decay=1e-4, module_weight_decay={"fusion": 1e-5})
        logs = model.train_on_batch(images, labels, return_dict=True)
        runs.append((logs, model.get_weights()))
    (fused_logs, fused_weights), (keras_logs, keras_weights) = runs
    for name, value in keras_logs.items():
        np.testing.assert_allclose(fused_logs[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for a, b in zip(fused_weights, keras_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
