"""Every workaround of private or undocumented Keras behaviour, in one place, checked on one Keras range.

Each piece names the Keras behaviour it works around. They were checked on Keras 3.15 (the version pinned
in requirements.txt); importing this module under another Keras fails loudly, so an upgrade re-checks
them instead of silently training with a workaround that no longer fits:

- `LazyOptimizerBuild._maybe_symbolic_build`: Keras 3's version reduces a distributed input batch across
  replicas, which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
- `worker_logs`: Keras averages multi-worker step logs along axis 0, which scalars lack (same issue).
- `ReplicaConsistentLossScaleOptimizer.check_finite`: Keras's LossScaleOptimizer decides skip-or-apply
  from the first replica's gradients only.
- `offline_weights`: keras.applications download weights through the private `file_utils.get_file`,
  which without network fails only after a timeout and does not say where the file belongs.
- `load_weights_strictly`: `Model.load_weights` only warns ("Skipping variable loading for ...") when the
  file lacks some of the model's layers, leaving them with their fresh weights.
- `mean_state`: the sum and the weight of a `keras.metrics.Mean`, its undocumented `total` and `count`.

tfmot's workarounds live on the export side (`ffl_tf.export.tfmot_compat`), so training never imports tfmot.
"""

import contextlib
import os
import urllib.parse
import warnings
from collections.abc import Iterator

import keras
import tensorflow as tf

from ffl_tf.utils import reachability

CHECKED_VERSIONS = ("3.15.",)

if not keras.__version__.startswith(CHECKED_VERSIONS):
    raise ImportError(
        f"ffl_tf works around private Keras behaviour checked on Keras {', '.join(v + 'x' for v in CHECKED_VERSIONS)} "
        f"only; this is Keras {keras.__version__}. Install the pinned version (pip install -r requirements.txt) "
        "or re-check ffl_tf/keras_compat.py against this Keras and add it to CHECKED_VERSIONS."
    )


class LazyOptimizerBuild:
    """Mixin for a functional model with no compiled losses or metrics: skips Keras's symbolic build.

    Keras 3's `_maybe_symbolic_build` first reduces a distributed input batch across replicas, which fails
    under MultiWorkerMirroredStrategy (keras-team/keras#20585). A functional model is already built, so
    only the optimizer's slots remain to be created.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when replicas span several processes (workers), not just this process's devices."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def worker_logs(results: tf.Tensor) -> tf.Tensor:
    """Step results in the shape Keras's multi-worker log reduction expects (it averages along axis 0)."""
    if is_multi_worker(tf.distribute.get_strategy()):
        return results[:, None]
    return results


@keras.saving.register_keras_serializable(package="ffl_tf", name="ReplicaConsistentLossScaleOptimizer")
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


@contextlib.contextmanager
def offline_weights(backbone: str) -> Iterator[None]:
    """While active, keras.applications find their weights in the Keras cache or fail at once naming them.

    Keras's `get_file` (private: keras.src.utils.file_utils) downloads a weights file that is not cached,
    and re-downloads a cached one whose hash differs; without network that fails only after a timeout, with
    a message that does not say where the file should go. Patched here: a cached file is used (its hash is
    checked only when the download host is reachable); a missing one raises BackboneError at once when the
    host is unreachable, naming the file, where to put it and where it comes from.
    """
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    from ffl_tf.backbones.backbone import BackboneError  # here: ffl_tf.models imports this module

    real_get_file = file_utils.get_file

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None, file_hash=None, **kwargs):
        path = os.path.join(os.path.expanduser(cache_dir or keras_config.keras_home()), cache_subdir, fname)
        online = reachability.reachable(urllib.parse.urlparse(origin).hostname or "storage.googleapis.com")
        if not online and not os.path.exists(path):
            raise BackboneError(
                f"--pretrained needs {backbone}'s weights file {fname}, which is not in the Keras cache and cannot "
                f"be downloaded here ({origin} is unreachable). Fix: download {origin} on a machine with network "
                f"and put it at {path} (or point KERAS_HOME at a directory with models/{fname}), then rerun."
            )
        return real_get_file(fname, origin, *args, cache_subdir=cache_subdir, cache_dir=cache_dir,
                             file_hash=file_hash if online else None, **kwargs)

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = real_get_file


def load_weights_strictly(model: keras.Model, path: str) -> None:
    """`model.load_weights(path)`, raising ValueError where Keras only warns that the file lacks some layers.

    Keras 3.15 emits a UserWarning starting "Skipping variable loading for ..." and keeps those layers' fresh
    weights; a partly restored model must never be used as if restored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Skipping", category=UserWarning)
        try:
            model.load_weights(path)
        except UserWarning as warning:
            raise ValueError(f"{os.path.basename(path)} lacks some of the model's layers ({warning})") from None


def mean_state(metric: keras.metrics.Mean) -> tuple:
    """(sum of weighted values, sum of weights) of a `keras.metrics.Mean`: its `total` and `count` variables."""
    return metric.total, metric.count
