"""tf.distribute helpers: the strategy a run asks for, which worker writes, and batches every replica can share."""

import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local GPUs) or `multi_worker` (machines described by TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the run directory (the only process unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def check_batch_sizes(strategy: tf.distribute.Strategy, **batch_sizes: int) -> None:
    """Raises ValueError unless every global batch size splits evenly over the replicas (no ragged batches)."""
    replicas = strategy.num_replicas_in_sync
    for flag, size in batch_sizes.items():
        if size % replicas:
            raise ValueError(
                f"--{flag}={size} does not split evenly over {replicas} replicas; use a multiple of {replicas} "
                f"(e.g. {max(replicas, size // replicas * replicas)})."
            )
