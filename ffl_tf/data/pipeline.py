"""Input pipelines: uint8 images and int32 labels, batched, augmented, prefetched; one per input pipeline.

The training stream is a pure function of `seed`: pass p over the data is a permutation seeded by
`(seed, p)` and the i-th example of the stream is augmented with the stateless seed `(seed, i)`, however
tf.data parallelises the map. So a stream started at step s yields exactly the batches from batch s on,
which is how a resumed run continues where it stopped instead of replaying the first batches. (ImageNet,
too large to permute in memory, goes through a shuffle buffer instead and starts a fresh shuffle when
resumed.)

Under several workers each input pipeline reads, decodes and streams only its shard of the data. The
evaluation stream is padded with examples of weight 0 to a number of full batches that is the same on
every pipeline, so no replica ever gets an empty or ragged batch and evaluation traces once.
"""

import math

import tensorflow as tf

from ffl_tf.data.source import Source

# A batch size larger than any dataset: batching by it gathers a whole (finite) split.
_WHOLE_DATASET = 2**62


def train_batches(
    source: Source, *, batch_size: int, seed: int, start_step: int = 0, num_pipelines: int = 1, index: int = 0
) -> tf.data.Dataset:
    """Pipeline `index`'s training stream, repeated forever in batches of `batch_size`, from its batch `start_step`.

    Passes that are seeded permutations reach the start exactly by skipping cached images or file paths,
    which costs no decoding or augmentation. ImageNet's buffered shuffle cannot be replayed (its order
    also depends on tfds's file interleaving), so it starts a fresh shuffle, of its files too, seeded by
    the start step, rather than read up to a whole pass of JPEGs to skip.
    """
    examples = source.read_train(num_pipelines, index, seed + start_step)
    if source.cache:
        examples = examples.map(_decode_example(source), num_parallel_calls=tf.data.AUTOTUNE).cache()
    start = start_step * batch_size
    if source.shuffle_buffer is None:
        first_pass, offset = divmod(start, _count(examples)) if start else (0, 0)
        ds = _permuted_passes(examples, seed, first_pass).skip(offset)
    else:
        ds = examples.shuffle(source.shuffle_buffer, seed=seed + start_step).repeat()

    def augment(position, example):
        x, label = example
        # Distinct seeds across pipelines: the i-th example of pipeline `index` is example i*N+index overall.
        seed_index = position * num_pipelines + index
        return source.train_fn(x, tf.stack([tf.constant(seed, tf.int64), seed_index])), label

    ds = ds.enumerate(start).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(
    source: Source, *, batch_size: int, num_batches: int | None = None, num_pipelines: int = 1, index: int = 0
) -> tf.data.Dataset:
    """Pipeline `index`'s evaluation examples, not augmented, in batches of `batch_size`.

    Without `num_batches`: (images, labels), the last batch partial. With it: (images, labels, weights),
    exactly `num_batches` full batches, padded after the real examples (weight 1) with black images of
    label 0 and weight 0, which metrics and losses leave out.
    """
    examples = source.read_eval(num_pipelines, index, 0)
    ds = examples.map(
        lambda x, label: (source.eval_fn(_decode_example(source)(x, label)[0]), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if source.cache:
        ds = ds.cache()
    if num_batches is None:
        return ds.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros(source.info.image_shape, tf.uint8), tf.constant(0, tf.int32), tf.constant(0.0))
    ).repeat()
    ds = ds.map(lambda image, label: (image, label, tf.constant(1.0))).concatenate(padding)
    ds = ds.take(num_batches * batch_size).batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def pad_for_replicas(batches: tf.data.Dataset, num_replicas: int) -> tf.data.Dataset:
    """`batches` of (images, labels[, weights]) with every batch padded to a multiple of `num_replicas`.

    The padding (zero images of label 0) has weight 0 and the real examples keep theirs (1 when `batches`
    has none), so metrics and losses count only real examples, while a distribution strategy splits every
    batch evenly: no replica ever gets an empty or ragged share (an empty share crashes some CPU kernels).
    Evaluation only: weight-0 images would still move batch-norm statistics in training.
    """

    def pad(images, labels, weights=None):
        weights = tf.ones(tf.shape(labels)[:1], tf.float32) if weights is None else tf.cast(weights, tf.float32)
        size = tf.shape(labels)[0]
        missing = (num_replicas - size % num_replicas) % num_replicas

        def padded(tensor):
            return tf.concat([tensor, tf.zeros(tf.concat([[missing], tf.shape(tensor)[1:]], 0), tensor.dtype)], 0)

        return padded(images), padded(labels), padded(weights)

    return batches.map(pad, num_parallel_calls=tf.data.AUTOTUNE)


def eval_steps(num_examples: int, global_batch_size: int) -> int:
    """Evaluation steps covering `num_examples` in global batches (the last one padded)."""
    return math.ceil(num_examples / global_batch_size)


def distribute_train(
    strategy: tf.distribute.Strategy, source: Source, *, global_batch_size: int, seed: int, start_step: int = 0
):
    """The training stream for `strategy`: each worker reads its shard, each replica an equal part of a batch.

    With one worker, replica r of R gets the r-th consecutive slice of every global batch: the same
    examples, in the same order and with the same augmentation, as one device.
    """

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return train_batches(
            source, batch_size=context.get_per_replica_batch_size(global_batch_size), seed=seed,
            start_step=start_step, num_pipelines=context.num_input_pipelines, index=context.input_pipeline_id,
        )

    return strategy.distribute_datasets_from_function(make)


def distribute_eval(strategy: tf.distribute.Strategy, source: Source, *, global_batch_size: int) -> tuple:
    """(the padded evaluation stream for `strategy`, its number of steps): full batches for every replica.

    Pass the steps to `evaluate(steps=...)`/`fit(validation_steps=...)`: a distributed dataset reports
    its per-replica batches as its cardinality, which Keras would take for steps.
    """
    steps = eval_steps(source.info.num_eval, global_batch_size)

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return eval_batches(
            source, batch_size=context.get_per_replica_batch_size(global_batch_size),
            num_batches=steps * replicas_per_pipeline, num_pipelines=context.num_input_pipelines,
            index=context.input_pipeline_id,
        )

    return strategy.distribute_datasets_from_function(make), steps


def _decode_example(source: Source):
    return lambda x, label: (source.decode(x), label)


def _count(examples: tf.data.Dataset) -> int:
    """The number of examples of a finite split (counted once if tf.data does not know it)."""
    cardinality = int(examples.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(examples.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def _permuted_passes(examples: tf.data.Dataset, seed: int, first_pass: int) -> tf.data.Dataset:
    """Passes first_pass, first_pass + 1, ... over `examples`, pass p in the order seeded by (seed, p).

    A pure function of (seed, p), unlike `Dataset.shuffle`, whose order depends on how many passes the
    same iterator made before. Each pass gathers the dataset into one batch and permutes it: with the
    cache, three copies of the split in memory while permuting, one more than a shuffle buffer holding
    all of it. For 50,000 CIFAR images a pass takes about 0.7 s of one core, overlapped with training.
    """
    everything = examples.batch(_WHOLE_DATASET)

    def one_pass(pass_index):
        def permute(x, label):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(label)[0]), seed=tf.stack([tf.constant(seed, tf.int64), pass_index])
            )
            return tf.gather(x, order), tf.gather(label, order)

        return everything.map(permute).unbatch()

    return tf.data.Dataset.counter(first_pass).flat_map(one_pass)
