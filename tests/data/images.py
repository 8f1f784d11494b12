"""Helpers shared by the data tests: reading batches, enumerating crops, writing images."""

import pathlib

import numpy as np
import tensorflow as tf

CIFAR10_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def batches(ds, n=None):
    return [(x.numpy(), y.numpy()) for x, y in (ds.take(n) if n else ds)]


def crops(image, pad, mode="reflect", flip=True):
    """Every output pad_crop_flip may give for `image`, as a set of bytes."""
    height, width, _ = image.shape
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode=mode)
    windows = [padded[y:y + height, x:x + width] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    if flip:
        windows += [w[:, ::-1] for w in windows]
    return {w.tobytes() for w in windows}


def write_png(path: pathlib.Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def examples(images, labels):
    """The (image, label) pairs as a sorted list, to compare splits regardless of order."""
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))
