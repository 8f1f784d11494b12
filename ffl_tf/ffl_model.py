"""The FFL model: a functional network of branches + fusion module, trained by mutual distillation."""

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ffl_tf import losses
from ffl_tf.branches import build_branches
from ffl_tf.fusion import build_fusion
from ffl_tf.loss_scaling import ReplicaConsistentLossScaleOptimizer


class FFLModel(keras.Model):
    """Returns a dict of logits per head (`branch_<k>`, `ensemble`, `fused`) and trains them with FFL.

    Build it with `build_ffl_model`, then `compile()` with the FFL hyper-parameters (as in keras.io's
    "Knowledge Distillation" example) and `fit()`.
    """

    def compile(
        self,
        optimizer,
        *,
        steps_per_epoch: int,
        temperature: float = 3.0,
        rampup_epochs: float = 80.0,
        weight_decay: float = 1e-4,
        fusion_weight_decay: float = 1e-5,
        **kwargs,
    ) -> None:
        """`steps_per_epoch` turns the optimizer's step count into the (fractional) epoch of the ramp-up."""
        optimizer = keras.optimizers.get(optimizer)
        if self.dtype_policy.name == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Instead of Keras's own wrapper, whose overflow check looks at one replica only.
            optimizer = ReplicaConsistentLossScaleOptimizer(optimizer, name="loss_scale_optimizer")
        super().compile(optimizer=optimizer, **kwargs)
        self.steps_per_epoch = steps_per_epoch
        self.temperature = temperature
        self.rampup_epochs = rampup_epochs
        self.weight_decay = weight_decay
        self.fusion_weight_decay = fusion_weight_decay
        self.branch_heads = [name for name in self.output_names if name.startswith("branch_")]
        self.loss_metrics = {
            name: keras.metrics.Mean(name=name) for name in ("loss", *losses.PARTS, "l2", "kd_weight")
        }
        self.accuracy_metrics = {
            name: keras.metrics.SparseCategoricalAccuracy(name=f"acc_{name}")
            for name in (*self.branch_heads, "ensemble", "fused")
        }
        self.accuracy_metrics["branch_mean"] = keras.metrics.Mean(name="acc_branch_mean")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        # Keras 3's version first reduces a distributed input batch across replicas, which fails under
        # MultiWorkerMirroredStrategy (keras-team/keras#20585). A functional FFLModel is already built and
        # has no compiled losses or metrics: only the optimizer's slots remain to be created.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self) -> list:
        # Listing them here makes fit()/evaluate() reset them at the start of every epoch.
        return [*self.loss_metrics.values(), *self.accuracy_metrics.values()]

    def epoch(self):
        """The current fractional epoch, from the optimizer's step count (so it survives a resume)."""
        return ops.cast(self.optimizer.iterations, "float32") / self.steps_per_epoch

    def compute_ffl_loss(self, heads: dict, labels) -> tuple:
        """The loss L of SPEC section 2 plus L2 weight decay; returns (total, {part: value})."""
        kd_weight = losses.rampup_weight(self.epoch(), self.rampup_epochs)
        total, parts = losses.ffl_loss(
            [heads[name] for name in self.branch_heads],
            heads["fused"],
            labels,
            temperature=self.temperature,
            kd_weight=kd_weight,
        )
        # Split at trace time (not stored: Keras would track stored variables as the model's own weights).
        fusion_vars = self.get_layer("fusion").trainable_variables
        fusion_ids = {id(v) for v in fusion_vars}
        branch_vars = [v for v in self.trainable_variables if id(v) not in fusion_ids]
        parts["l2"] = losses.l2_penalty(branch_vars, self.weight_decay) + losses.l2_penalty(
            fusion_vars, self.fusion_weight_decay
        )
        parts["kd_weight"] = kd_weight
        return total + parts["l2"], parts

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            heads = self(images, training=True)
            loss, parts = self.compute_ffl_loss(heads, labels)
            # Gradients are summed over replicas, so each replica differentiates its share of the mean.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_ffl_metrics(heads, labels, loss, parts)

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        heads = self(images, training=False)
        loss, parts = self.compute_ffl_loss(heads, labels)
        return self.update_ffl_metrics(heads, labels, loss, parts)

    def update_ffl_metrics(self, heads: dict, labels, loss, parts: dict) -> dict:
        """Accumulates per-replica values weighted by batch size, so results are the global mean."""
        batch = ops.shape(labels)[0]
        for name, value in {"loss": loss, **parts}.items():
            # A replica's share of a final partial batch can be empty: its mean is NaN, and NaN * 0 is NaN.
            value = ops.where(batch > 0, value, 0.0)
            self.loss_metrics[name].update_state(value, sample_weight=batch)
        for name, metric in self.accuracy_metrics.items():
            if name != "branch_mean":
                metric.update_state(labels, heads[name])
        correct = [
            ops.cast(ops.equal(ops.argmax(heads[name], axis=-1), ops.cast(labels, "int64")), "float32")
            for name in self.branch_heads
        ]
        self.accuracy_metrics["branch_mean"].update_state(ops.mean(ops.stack(correct), axis=0))
        # Every metric is a weighted mean: summing (total, count) over replicas gives every replica the
        # global value, so logs are exact even with uneven batches and under multi-worker training.
        metrics = self.metrics
        totals = ops.stack([ops.cast(m.total, "float32") for m in metrics])
        counts = ops.stack([ops.cast(m.count, "float32") for m in metrics])
        replica = tf.distribute.get_replica_context()
        totals, counts = tf.unstack(replica.all_reduce("sum", ops.stack([totals, counts])))
        results = ops.divide_no_nan(totals, counts)
        if _is_multi_worker(tf.distribute.get_strategy()):
            # Keras averages multi-worker step logs along axis 0, which scalars lack (keras-team/keras#20585).
            results = results[:, None]
        return {m.name: results[i] for i, m in enumerate(metrics)}


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when replicas span several processes (workers), not just this process's devices."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def build_ffl_model(
    backbones: Sequence[str],
    num_classes: int,
    image_shape: tuple[int, int, int],
    *,
    shared_stages: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (255.0,),
    fusion_channels: int | None = None,
    sync_bn: bool = False,
) -> FFLModel:
    """Builds the FFL network for raw uint8 images; it normalises them itself with `mean`/`std` (0..255 units).

    One branch per name in `backbones`; the first `shared_stages` stages (and the stem) are shared.
    """
    images = keras.Input(image_shape, dtype="uint8", name="images")
    x = keras.layers.Normalization(mean=list(mean), variance=list(np.square(std)), name="normalize")(images)
    branches = build_branches(
        x, backbones, num_classes=num_classes, shared_stages=shared_stages, sync_bn=sync_bn
    )
    fusion = build_fusion(
        [b["features"].shape[1:] for b in branches], num_classes, channels=fusion_channels, sync_bn=sync_bn
    )
    logits = [b["logits"] for b in branches]
    outputs = {f"branch_{k}": z for k, z in enumerate(logits)}
    outputs["ensemble"] = keras.layers.Average(dtype="float32", name="ensemble")(logits)
    outputs["fused"] = fusion([b["features"] for b in branches])
    return FFLModel(images, outputs, name="ffl")


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable parameters: `branches` (every branch, the shared trunk once), `fusion`, `total`."""
    total = _count(model.trainable_weights)
    fusion = _count(model.get_layer("fusion").trainable_weights)
    return {"total": total, "branches": total - fusion, "fusion": fusion}


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def head_model(model: FFLModel, head: str) -> keras.Model:
    """A model from raw images to one head's logits, sharing `model`'s layers and holding only what it needs.

    `head` is `branch_<k>` (that branch and the trunk: no fusion module, no other branch), `ensemble`
    (all branches) or `fused` (all branches and the fusion module).
    """
    branch_names = [name for name in model.output_names if name.startswith("branch_")]
    if head not in (*branch_names, "ensemble", "fused"):
        raise ValueError(f"Unknown head {head!r}; choose from: {', '.join([*branch_names, 'ensemble', 'fused'])}.")
    images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="images")
    x = model.get_layer("normalize")(images)
    if any(layer.name == "trunk" for layer in model.layers):
        x = model.get_layer("trunk")(x)
    if head.startswith("branch_"):
        return keras.Model(images, model.get_layer(head)(x)["logits"], name=head)
    branches = [model.get_layer(name)(x) for name in branch_names]
    if head == "ensemble":
        logits = keras.layers.Average(dtype="float32", name="ensemble")([b["logits"] for b in branches])
    else:
        logits = model.get_layer("fusion")([b["features"] for b in branches])
    return keras.Model(images, logits, name=head)
