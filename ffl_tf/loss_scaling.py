"""Dynamic loss scaling (mixed_float16) whose skip-or-apply decision is the same on every replica."""

import keras
import tensorflow as tf


class ReplicaConsistentLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Skips a step when any replica's gradients are non-finite, not only the first replica's.

    Keras 3's LossScaleOptimizer checks the gradients before they are summed across replicas and, under
    MirroredStrategy, decides from the first replica alone: an overflow on another replica is applied
    (inf weights). Under MultiWorkerMirroredStrategy each worker would decide for itself, and workers
    that disagree deadlock in the gradient all-reduce. Summing the non-finite flags fixes both.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        replica = tf.distribute.get_replica_context()
        if replica is None or replica.num_replicas_in_sync == 1:
            return finite
        non_finite_replicas = replica.all_reduce("sum", 1.0 - tf.cast(finite, tf.float32))
        return tf.equal(non_finite_replicas, 0.0)
