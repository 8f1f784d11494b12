"""What every dataset provides to the pipelines: its facts (`DatasetInfo`) and how to read and decode it."""

import dataclasses
from collections.abc import Callable

import tensorflow as tf


class DatasetNotFoundError(Exception):
    """The requested data is not on disk, cannot be fetched or cannot be read; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset; pixels are uint8, stats in 0..255 units.

    `dropped_images` counts undecodable image files left out by `skip_bad_images`.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_eval: int
    class_names: tuple[str, ...]
    dropped_images: int = 0


# (number of input pipelines, this pipeline's index, file-shuffle seed) -> unbatched (x, int32 label).
Reader = Callable[[int, int, int], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset's splits as undecoded elements (x, int32 label), and how to turn x into an image.

    Readers return one input pipeline's share of a split, chosen before anything is decoded, so several
    workers decode disjoint parts. `decode` maps x to what is cached (a decoded small image) or leaves it
    (a file path or JPEG bytes that `train_fn`/`eval_fn` decode while cropping).
    """

    info: DatasetInfo
    read_train: Reader
    read_eval: Reader
    decode: Callable[[tf.Tensor], tf.Tensor]
    train_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (decoded x, seed [2]) -> uint8 image
    eval_fn: Callable[[tf.Tensor], tf.Tensor]  # decoded x -> uint8 image
    cache: bool  # x decodes to a small image: keep the decoded split in RAM
    # None: every pass over train is a seeded permutation of all of it, so the stream can be resumed
    # exactly. Otherwise the size of a shuffle buffer over a stream too large to permute (ImageNet).
    shuffle_buffer: int | None = None


def int32_label(x: tf.Tensor, label: tf.Tensor) -> tuple:
    return x, tf.cast(label, tf.int32)


def shard(examples: tf.data.Dataset, num_pipelines: int, index: int) -> tf.data.Dataset:
    """Pipeline `index`'s share of `examples` (every num_pipelines-th element), before any decoding."""
    return examples if num_pipelines == 1 else examples.shard(num_pipelines, index)
