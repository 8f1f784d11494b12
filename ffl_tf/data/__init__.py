"""The data: a `Source` per dataset (opened once per run) and the input pipelines built from it.

Pixels stay uint8 end to end: normalisation (`DatasetInfo.mean/std`) belongs to the model, so exported
models take raw pixels.

    source = data.open_source("cifar10", data_dir=...)        # checks and opens the data once
    train = data.pipeline.distribute_train(strategy, source, global_batch_size=128, seed=0)
    train, eval_, info = data.load("cifar10", batch_size=128, eval_batch_size=100)   # one device
"""

import tensorflow as tf

from ffl_tf.data import pipeline
from ffl_tf.data.image_folder import image_folder_files, image_folder_source
from ffl_tf.data.ops_image import center_crop, inception_crop, pad_crop_flip
from ffl_tf.data.pipeline import pad_for_replicas
from ffl_tf.data.source import DatasetInfo, DatasetNotFoundError, Source
from ffl_tf.data.tfds_classification import classification_source
from ffl_tf.data.tfds_sources import cifar_source, digits_source, imagenet_source

DATASETS = ("digits", "cifar10", "cifar100", "imagenet2012", "image_folder")
# Datasets whose images have one size, which --image_size cannot change.
FIXED_SIZE_DATASETS = ("digits", "cifar10", "cifar100")

__all__ = [
    "DATASETS", "FIXED_SIZE_DATASETS", "DatasetInfo", "DatasetNotFoundError", "Source", "center_crop", "dataset_info",
    "image_folder_files", "inception_crop", "load", "open_source", "pad_crop_flip", "pad_for_replicas", "pipeline",
]


def open_source(
    dataset: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    validation_fraction: float = 0.2,
    split_seed: int = 0,
    download: bool = False,
    skip_bad_images: bool = False,
) -> Source:
    """Opens `dataset`, preparing it if it is missing and can be; raises DatasetNotFoundError if not.

    Args:
        dataset: one of `DATASETS`, or any tensorflow-datasets image-classification dataset's name.
        data_dir: the tfds data directory, or the image folder for `image_folder`.
        image_size: square size to resize images to (image folders, ImageNet and other tfds datasets;
            default: their native size, 224 when it varies).
        validation_fraction: image folders without a test split: the fraction of train/ held out.
        split_seed: chooses the image-folder hold-out (the same images whatever the training seed).
        download: let tfds download a missing dataset (fails within seconds without network).
        skip_bad_images: image folders: leave out undecodable files and empty class folders
            (default: refuse them, naming them).
    """
    if dataset == "digits":
        return digits_source(data_dir, image_size)
    if dataset in ("cifar10", "cifar100"):
        return cifar_source(dataset, data_dir, image_size, download)
    if dataset == "imagenet2012":
        return imagenet_source(data_dir, image_size, download)
    if dataset == "image_folder":
        return image_folder_source(data_dir, image_size, validation_fraction, split_seed, skip_bad_images)
    return classification_source(dataset, data_dir, image_size, validation_fraction, download)


def dataset_info(dataset: str, **kwargs) -> DatasetInfo:
    """`dataset`'s DatasetInfo (see `open_source` for the arguments); cheap unless the data must be prepared."""
    return open_source(dataset, **kwargs).info


def load(
    dataset: str, *, batch_size: int, eval_batch_size: int, seed: int = 0, start_step: int = 0, download: bool = True,
    **kwargs,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """Returns (train, eval, info) for one device; elements are (uint8 [B, H, W, C], int32 [B]).

    train is shuffled with `seed`, augmented, repeated forever and batched with drop_remainder, starting
    at its batch `start_step`; eval is neither augmented nor repeated and keeps its last partial batch.
    `seed` orders and augments the training stream; other keyword arguments are `open_source`'s.
    """
    if batch_size < 1 or eval_batch_size < 1:
        raise ValueError(f"batch_size={batch_size} and eval_batch_size={eval_batch_size} must both be >= 1.")
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    source = open_source(dataset, download=download, **kwargs)
    train = pipeline.train_batches(source, batch_size=batch_size, seed=seed, start_step=start_step)
    return train, pipeline.eval_batches(source, batch_size=eval_batch_size), source.info
