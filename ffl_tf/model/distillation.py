"""The one `keras.Model` subclass: a functional network of named heads, trained by an online-distillation loss.

Every method (FFL, DML, ONE, vanilla; `ffl_tf/methods/`) builds its network with the functional API and
returns it as a `DistillationModel`; `compile()` takes the method's loss, as keras.io's "Knowledge
Distillation" example's `Distiller.compile` takes its distillation loss. The train step adds what every
method shares: the ramp-up weight w(e), L2 weight decay, loss scaling for mixed precision, the division
by the number of replicas, and metrics that are exact global values under any distribution strategy.
Evaluation adds metrics of its own, which the train step never touches: each head's expected calibration
error (`ece_<head>`) and the branches' mean pairwise disagreement (`disagreement`), logged by Keras as
`val_ece_<head>` and `val_disagreement` every epoch.
"""

from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ffl_tf.data import pipeline
from ffl_tf.model import calibration, losses, serialization
from ffl_tf.model import heads as head_names
from ffl_tf.model.branches import TRUNK
from ffl_tf.utils import keras_compat

# The evaluation metric of the branches' mean pairwise disagreement (models with several branches).
DISAGREEMENT = "disagreement"
# distillation_loss(heads, labels, *, kd_weight, sample_weight) -> (total, {part: value}).
DistillationLoss = Callable[..., tuple]


@keras.saving.register_keras_serializable(package="ffl_tf", name="DistillationModel")
class DistillationModel(keras_compat.LazyOptimizerBuild, serialization.Serializable, keras.Model):
    """Returns a dict of logits per head (`branch_<k>`, `ensemble`, `fused`, ...) and trains them together.

    It saves as a Keras model file, compile state included (`ffl_tf.model.serialization`); `class_names`, when
    set, name its classes in label order.

    Example:

    ```python
    model = build_ffl_model(["resnet32", "resnet32"], 100, (32, 32, 3), shared_stages=2)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                  distillation_loss=ffl_tf.methods.loss_fn("ffl", temperature=3.0),
                  steps_per_epoch=391, rampup_epochs=80, weight_decay=1e-4, module_weight_decay={"fusion": 1e-5})
    model.fit(train_ds, epochs=300)
    ```
    """

    def compile(
        self,
        optimizer,
        *,
        distillation_loss: DistillationLoss,
        steps_per_epoch: int,
        rampup_epochs: float,
        weight_decay: float,
        module_weight_decay: Mapping[str, float] | None = None,
        **kwargs,
    ) -> None:
        """Configures training.

        Args:
            optimizer: a Keras optimizer; under `mixed_float16` it is wrapped for loss scaling.
            distillation_loss: the method's loss, called as
                `distillation_loss(heads, labels, kd_weight=w, sample_weight=s)` -> `(total, parts)`.
            steps_per_epoch: turns the optimizer's step count into the (fractional) epoch e of w(e).
            rampup_epochs: R of the ramp-up w(e); 0 gives w = 1 throughout.
            weight_decay: L2 coefficient (PyTorch SGD convention) of every weight but those of
                `module_weight_decay`'s layers.
            module_weight_decay: {top-level layer name: its weights' own L2 coefficient}, as a method declares
                them (`Method.module_weight_decay`; FFL's fusion module takes 1e-5).
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).
        """
        optimizer = keras.optimizers.get(optimizer)
        if self.dtype_policy.name == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras_compat.ReplicaConsistentLossScaleOptimizer(optimizer, name="loss_scale_optimizer")
        super().compile(optimizer=optimizer, **kwargs)
        self.distillation_loss = distillation_loss
        self.steps_per_epoch = steps_per_epoch
        self.rampup_epochs = rampup_epochs
        self.weight_decay = weight_decay
        self.module_weight_decay = dict(module_weight_decay or {})
        unknown = sorted(set(self.module_weight_decay) - self._layer_names())
        if unknown:
            raise ValueError(f"Received: module_weight_decay for {unknown}; this model's top-level layers are "
                             f"{sorted(self._layer_names())}.")
        self.heads = list(self.output)  # the output dict's keys (output_names are layer names)
        self.branch_heads = head_names.branch_heads(self.heads)
        parts = ("loss", *self._loss_parts(), "l2", "kd_weight")
        self.loss_metrics = {name: keras.metrics.Mean(name=name) for name in parts}
        self.accuracy_metrics = {
            name: keras.metrics.SparseCategoricalAccuracy(name=f"acc_{name}") for name in self.heads
        }
        self.accuracy_metrics[head_names.BRANCH_MEAN] = keras.metrics.Mean(name=f"acc_{head_names.BRANCH_MEAN}")
        self.evaluation_metrics = {
            f"ece_{name}": calibration.ExpectedCalibrationError(name=f"ece_{name}") for name in self.heads
        }
        if len(self.branch_heads) > 1:
            self.evaluation_metrics[DISAGREEMENT] = keras.metrics.Mean(name=DISAGREEMENT)

    def _loss_parts(self) -> list[str]:
        """The names of the loss's parts, from one call on a tiny batch of zeros."""
        zeros = {name: np.zeros((1, *output.shape[1:]), "float32") for name, output in self.output.items()}
        _, parts = self.distillation_loss(zeros, np.zeros(1, "int32"), kd_weight=1.0)
        return list(parts)

    @property
    def metrics(self) -> list:
        # Listing them here makes fit()/evaluate() reset them at the start of every epoch.
        return [*self.loss_metrics.values(), *self.accuracy_metrics.values()]

    def reset_metrics(self) -> None:
        # The evaluation-only metrics are not in `metrics`, so the train step's logs and Keras's handling
        # of them stay as they are; fit() and evaluate() reset them here, with the others.
        super().reset_metrics()
        for metric in getattr(self, "evaluation_metrics", {}).values():
            metric.reset_state()

    def epoch(self):
        """The current fractional epoch, from the optimizer's step count (so it survives a resume)."""
        return ops.cast(self.optimizer.iterations, "float32") / self.steps_per_epoch

    def compute_distillation_loss(self, heads: dict, labels, sample_weight=None) -> tuple:
        """The method's loss at the current w(e) plus L2 weight decay; returns (total, {part: value})."""
        kd_weight = losses.rampup_weight(self.epoch(), self.rampup_epochs)
        total, parts = self.distillation_loss(heads, labels, kd_weight=kd_weight, sample_weight=sample_weight)
        parts = {**parts, "l2": self.l2_penalty(), "kd_weight": kd_weight}
        return total + parts["l2"], parts

    def l2_penalty(self):
        """The L2 weight decay: `weight_decay` on every weight but those of `module_weight_decay`'s layers."""
        own = {name: self.get_layer(name).trainable_variables for name in self.module_weight_decay}
        owned = {id(v) for variables in own.values() for v in variables}
        penalty = losses.l2_penalty([v for v in self.trainable_variables if id(v) not in owned], self.weight_decay)
        for name, variables in own.items():
            penalty += losses.l2_penalty(variables, self.module_weight_decay[name])
        return penalty

    def _layer_names(self) -> set[str]:
        return {layer.name for layer in self.layers}

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, refusing training batches a distribution strategy would split unevenly, and with
        `validation_data` padded as `evaluate` pads it."""
        self._check_training_batches(x)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._evaluation_batches(kwargs["validation_data"])
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`; under several replicas a tf.data input's batches are padded with weight-0
        examples (`ffl_tf.data.pad_for_replicas`), so no replica gets an empty or ragged share of a partial final
        batch, and the metrics are those of the real examples, as on one device."""
        return super().evaluate(self._evaluation_batches(x), y, *args, **kwargs)

    def _evaluation_batches(self, data):
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1 and isinstance(data, tf.data.Dataset):
            return pipeline.pad_for_replicas(data, replicas)
        return data

    def _check_training_batches(self, data) -> None:
        """Under several replicas, refuses a tf.data input whose batches may be partial: a partial last batch
        would be split unevenly (an empty share crashes some CPU kernels) and padding would move batch-norm
        statistics."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1 and isinstance(data, tf.data.Dataset):
            batch = tf.nest.flatten(data.element_spec)[0].shape[:1]
            if batch[0] is None or batch[0] % replicas:
                raise ValueError(
                    f"Received: a training dataset of batches of {batch[0] or 'varying'} examples under "
                    f"{replicas} replicas. Fix: batch it with drop_remainder=True and a batch size that is a "
                    f"multiple of {replicas}, e.g. dataset.batch({replicas * 16}, drop_remainder=True)."
                )

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            heads = self(images, training=True)
            loss, parts = self.compute_distillation_loss(heads, labels, sample_weight)
            # Gradients are summed over replicas, whose batches are equal, so each differentiates its share.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_distillation_metrics(heads, labels, loss, parts, sample_weight)

    def test_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        heads = self(images, training=False)
        loss, parts = self.compute_distillation_loss(heads, labels, sample_weight)
        return self.update_distillation_metrics(heads, labels, loss, parts, sample_weight, evaluation=True)

    def update_distillation_metrics(
        self, heads: dict, labels, loss, parts: dict, sample_weight=None, *, evaluation: bool = False
    ) -> dict:
        """Accumulates weighted means (padding has weight 0) and returns every metric's global value.

        With `evaluation`, also the evaluation-only metrics: ECE per head and the branches' disagreement.
        """
        if sample_weight is None:
            sample_weight = ops.ones(ops.shape(labels), "float32")
        sample_weight = ops.cast(sample_weight, "float32")
        examples = ops.sum(sample_weight)
        for name, value in {"loss": loss, **parts}.items():
            self.loss_metrics[name].update_state(value, sample_weight=examples)
        for name in self.heads:
            self.accuracy_metrics[name].update_state(labels, heads[name], sample_weight=sample_weight)
        correct = [
            ops.cast(ops.equal(ops.argmax(heads[name], axis=-1), ops.cast(labels, "int64")), "float32")
            for name in self.branch_heads
        ]
        self.accuracy_metrics[head_names.BRANCH_MEAN].update_state(
            ops.mean(ops.stack(correct), axis=0), sample_weight=sample_weight
        )
        if not evaluation:
            return self._global_results(self.metrics)
        for name in self.heads:
            self.evaluation_metrics[f"ece_{name}"].update_state(labels, heads[name], sample_weight=sample_weight)
        if DISAGREEMENT in self.evaluation_metrics:
            self.evaluation_metrics[DISAGREEMENT].update_state(
                calibration.disagreement_per_example([heads[name] for name in self.branch_heads]),
                sample_weight=sample_weight,
            )
        return self._global_results([*self.metrics, *self.evaluation_metrics.values()])

    def _global_results(self, metrics: list) -> dict:
        """Every metric's value over all replicas, from one all-reduce of the metrics' states.

        A weighted mean's state is (total, count), an ECE's its per-bin sums: all are sums over examples,
        so summing them over replicas gives every replica the global value, exact with uneven weights
        and under multi-worker training.
        """
        means = [m for m in metrics if not isinstance(m, calibration.ExpectedCalibrationError)]
        binned = [m for m in metrics if isinstance(m, calibration.ExpectedCalibrationError)]
        sums, counts = zip(*map(keras_compat.mean_state, means))
        states = [ops.stack([ops.cast(s, "float32") for s in sums]),
                  ops.stack([ops.cast(c, "float32") for c in counts]),
                  *(ops.reshape(ops.cast(m.bins, "float32"), [-1]) for m in binned)]
        replica = tf.distribute.get_replica_context()
        states = tf.split(replica.all_reduce("sum", ops.concatenate(states)), [int(s.shape[0]) for s in states])
        totals, counts, *bins = states
        eces = [calibration.ece_from_bins(ops.reshape(b, m.bins.shape)) for b, m in zip(bins, binned)]
        values = [ops.divide_no_nan(totals, counts), *(ops.reshape(ece, [1]) for ece in eces)]
        results = keras_compat.worker_logs(ops.concatenate(values))
        return {m.name: results[i] for i, m in enumerate([*means, *binned])}


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable parameters: `total`, `branches` (every branch, a shared trunk once) and each other module.

    The other modules are the top-level layers with weights that are neither a branch nor the trunk: FFL's
    `fusion` module (with the fused classifier), ONE's `gate`, and so on.
    """
    total = _count(model.trainable_weights)
    extras = {layer.name: _count(layer.trainable_weights) for layer in model.layers
              if layer.trainable_weights and head_names.branch_index(layer.name) is None and layer.name != TRUNK}
    return {"total": total, "branches": total - sum(extras.values()), **extras}


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def head_model(model: keras.Model, head: str) -> keras.Model:
    """A model from raw images to one head's logits, sharing `model`'s layers and holding only what it needs.

    `branch_<k>` keeps that branch and the trunk it shares (no fusion module, no other branch), `ensemble`
    every branch (and ONE's gate), `fused` every branch and the fusion module.
    """
    if head not in model.output:
        raise ValueError(f"Unknown head {head!r}; choose from: {', '.join(model.output)}.")
    return keras.Model(model.input, model.output[head], name=head)
