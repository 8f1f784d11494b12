"""Batch normalization computed by TensorFlow's fused kernel: the same layer, one op instead of about ten.

Keras 3's BatchNormalization (TensorFlow backend) computes the batch moments and the normalisation with
separate element-wise ops, and under mixed precision casts every activation to float32 and back; its
gradient adds as many again. TensorFlow's `FusedBatchNormV3` does the forward pass in one kernel and the
backward pass in another (oneDNN on CPU, cuDNN on GPU), reading bfloat16/float16 activations directly
with float32 statistics. Measured on one 128x16x16x32 layer (forward and backward, AMD EPYC, 2 threads):
2.1x faster in float32, 3.1x in bfloat16 (benchmarks/README.md).

`BatchNorm` keeps Keras's layer: its weights (gamma, beta, moving_mean, moving_variance), its config
(momentum, epsilon, synchronized) and its moving-statistics rule, which averages the *biased* batch
variance (the fused kernel reports the unbiased one; it is converted back). It falls back to Keras's
computation where the fused kernel does not apply: synchronized statistics across replicas, a mask, or an
input that is not 4-D channels-last (ONE's gate normalises [batch, K]).
"""

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

# True only inside `keras_batch_norm()`: new layers compute the way Keras does.
_keras_computation = False


@contextlib.contextmanager
def keras_batch_norm() -> Iterator[None]:
    """Builds `BatchNorm` layers that compute as Keras's BatchNormalization while active.

    It exists so that benchmarks and tests can compare the fused computation with Keras's own on the same
    network; no model uses it.
    """
    global _keras_computation
    previous, _keras_computation = _keras_computation, True
    try:
        yield
    finally:
        _keras_computation = previous


@keras.saving.register_keras_serializable(package="ffl_tf", name="BatchNorm")
class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization, computed by `FusedBatchNormV3` for 4-D channels-last inputs.

    `fused=None` (the default) takes the fused kernel unless built inside `keras_batch_norm()`; the choice is part
    of the layer's config, so a saved model computes the same way when loaded.
    """

    def __init__(self, *, fused: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fused = (not _keras_computation if fused is None else fused) and not self.synchronized

    def call(self, inputs, training=None, mask=None):
        if not self.fused or mask is not None or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        scale, offset = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
            return outputs
        empty = tf.constant([], tf.float32)
        outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
        )
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = unbiased_variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "fused": self.fused}
