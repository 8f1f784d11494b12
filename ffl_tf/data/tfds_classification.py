"""Any tensorflow-datasets image-classification dataset by name (an `image` and a `label` feature).

tf_flowers, oxford_iiit_pet, food101, imagenette, ...: the class names come from the label feature, the
evaluation split is `test` or `validation`, or when there is neither the last `validation_fraction` of
`train` (tfds's fixed order, so the same images every time). Images of a fixed size keep it unless
`image_size` is given; others are resized to `image_size` (default 224). Statistics are ImageNet's.
Up to 64 px, images are cached and augmented like CIFAR; larger ones like ImageNet (random-resized crops,
centre crop for evaluation), decoded from their bytes by the pipeline after sharding.
"""

import functools

import tensorflow as tf
import tensorflow_datasets as tfds

from ffl_tf.data import ops_image
from ffl_tf.data.source import DatasetInfo, DatasetNotFoundError, Source
from ffl_tf.data.tfds_sources import (
    IMAGENET_MEAN,
    IMAGENET_SIZE,
    IMAGENET_STD,
    SMALL_IMAGE_SIZE,
    download_and_prepare,
    ensure_prepared,
    reader,
    split_size,
)

_EVAL_SPLITS = ("test", "validation")


def classification_source(name, data_dir, image_size, validation_fraction, download_allowed) -> Source:
    """`name` from tfds as a Source; refuses datasets without an image and a class label, in one line."""
    builder = _builder(name, data_dir)
    features = builder.info.features
    image, label = (dict(features.items()).get(key) for key in ("image", "label"))
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise DatasetNotFoundError(
            f"--dataset={name} is not an image-classification dataset: ffl_tf needs an `image` (Image) and a "
            f"`label` (ClassLabel) feature, and it has {dict((k, type(v).__name__) for k, v in features.items())}."
        )
    ensure_prepared(builder, "train", functools.partial(download_and_prepare, builder, download=download_allowed))
    train_split, eval_split = _splits(builder, validation_fraction)
    size = image_size or _native_size(image.shape) or IMAGENET_SIZE
    info = DatasetInfo(
        name=name, num_classes=label.num_classes, image_shape=(size, size, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_train=split_size(builder, train_split), num_eval=split_size(builder, eval_split),
        class_names=tuple(label.names),
    )

    def decode(encoded):
        decoded = image.decode_example(encoded)
        return tf.image.grayscale_to_rgb(decoded) if image.shape[-1] == 1 else decoded

    readers = {"read_train": reader(builder, train_split), "read_eval": reader(builder, eval_split)}
    if size <= SMALL_IMAGE_SIZE:
        return Source(info, **readers, decode=lambda encoded: ops_image.resize_uint8(decode(encoded), size),
                      train_fn=functools.partial(ops_image.pad_crop_flip, pad=size // 8), eval_fn=ops_image.identity,
                      cache=True)
    return Source(
        info, **readers, decode=ops_image.identity,
        train_fn=lambda encoded, seed: ops_image.inception_crop_flip(decode(encoded), seed, size=size, jpeg=False),
        eval_fn=lambda encoded: ops_image.center_crop(decode(encoded), size=size), cache=False,
    )


def _builder(name: str, data_dir):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetNotFoundError(
            f"--dataset={name} is neither a built-in dataset (digits, cifar10, cifar100, imagenet2012, image_folder) "
            "nor a tensorflow-datasets name (see https://www.tensorflow.org/datasets/catalog). Check the spelling."
        ) from None


def _splits(builder, validation_fraction: float) -> tuple[str, str]:
    """(train split, evaluation split): test or validation, else the last fraction of train held out."""
    available = set(builder.info.splits) or {"train", "test"}  # mock_data: no split metadata, train and test
    for split in _EVAL_SPLITS:
        if split in available:
            return "train", split
    held_out = max(1, round(validation_fraction * 100))
    return f"train[:-{held_out}%]", f"train[-{held_out}%:]"


def _native_size(shape) -> int | None:
    """The side of a fixed-size square image feature (e.g. 32 for CIFAR-like data), else None."""
    height, width = shape[0], shape[1]
    return height if height is not None and height == width else None
