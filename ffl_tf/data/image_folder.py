"""`image_folder`: your images, as DATA_DIR/<split>/<class>/<image>.png|jpg.

Classes are the sub-folders of `train/`; the evaluation split is `test/`, `validation/` or `val/`, or a
seeded hold-out of `train/`. Every file is checked before training starts (`image_check`); bad files and
empty class folders stop the run with their names, or are left out with `skip_bad_images`.
"""

import functools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from ffl_tf.data import image_check, ops_image
from ffl_tf.data.source import DatasetInfo, DatasetNotFoundError, Source, shard
from ffl_tf.data.tfds_sources import IMAGENET_MEAN, IMAGENET_STD, SMALL_IMAGE_SIZE

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
EVAL_SPLIT_DIRS = ("test", "validation", "val")
# Largest aspect ratio of the first image for it to define the default image_size.
_MAX_DEFAULT_ASPECT = 4 / 3

Examples = list[tuple[str, int]]


def image_folder_files(
    data_dir: str, *, validation_fraction: float = 0.2, seed: int = 0, skip_bad_images: bool = False
) -> tuple[tuple[str, ...], Examples, Examples, int]:
    """Returns (class_names, train, eval, dropped) of `<data_dir>/<split>/<class>/<image>`.

    class_names are the sorted non-empty subfolders of `train/`. eval is the first of `test/`,
    `validation/`, `val/` that exists; otherwise round(validation_fraction * N) of the N train files,
    chosen by `np.random.RandomState(seed)` (a frozen stream) from the files sorted by (class, file name),
    so the hold-out never depends on listing order. `dropped` counts the undecodable files left out.

    We list files ourselves instead of using `tfds.folder_dataset.ImageFolder`: it only serves whole
    folders as splits (no seeded hold-out), takes labels from the union of all splits rather than
    `train/`, and pre-shuffles examples with a fixed seed of its own.
    """
    train_dir = _train_dir(data_dir)
    class_names = _classes(train_dir, skip_bad_images)
    eval_dirs = [os.path.join(data_dir, name) for name in EVAL_SPLIT_DIRS]
    splits = [("train", train_dir)] + [("eval", d) for d in eval_dirs if tf.io.gfile.isdir(d)][:1]
    listed = {name: _list_images(directory, class_names) for name, directory in splits}
    bad = image_check.bad_images(data_dir, [path for examples in listed.values() for path, _ in examples])
    if bad and not skip_bad_images:
        raise DatasetNotFoundError(image_check.describe(bad, data_dir))
    if bad:
        logging.warning("%s Training without them (--skip_bad_images).", image_check.describe(bad, data_dir, fix=False))
    bad_paths = set(bad)
    kept = {name: [e for e in examples if e[0] not in bad_paths] for name, examples in listed.items()}
    train = kept.pop("train")
    if kept:
        (eval_,) = kept.values()
        return class_names, train, eval_, len(bad)
    return (class_names, *_hold_out(train, validation_fraction, seed), len(bad))


def _train_dir(data_dir: str | None) -> str:
    if not data_dir:
        raise DatasetNotFoundError(
            "Dataset image_folder needs a directory: pass --data_dir=DIR (data_dir=DIR) laid out as "
            "DIR/train/<class>/<image>.png|jpg, optionally with DIR/test/<class>/..."
        )
    train_dir = os.path.join(data_dir, "train")
    if not tf.io.gfile.isdir(train_dir):
        raise DatasetNotFoundError(
            f"Dataset image_folder: {train_dir} is not a directory (data_dir={data_dir!r}). Fix: pass "
            "--data_dir=DIR where DIR/train/<class>/<image>.png|jpg holds the training images (optionally "
            "DIR/test/<class>/... the evaluation images)."
        )
    return train_dir


def _classes(train_dir: str, skip_empty: bool) -> tuple[str, ...]:
    """The sorted class folders of train/; an empty one is refused, or left out with `skip_empty`."""
    names = sorted(_subdirs(train_dir))
    empty = [name for name in names if not _image_files(os.path.join(train_dir, name))]
    if empty and not skip_empty:
        raise DatasetNotFoundError(
            f"image_folder: class folder{'s' if len(empty) > 1 else ''} "
            f"{', '.join(os.path.join(train_dir, n) for n in empty)} hold{'' if len(empty) > 1 else 's'} no "
            f"{'/'.join(IMAGE_EXTENSIONS)} images. Fix: add images or remove the folder, or pass "
            "--skip_bad_images to train without that class."
        )
    if empty:
        logging.warning("image_folder: leaving out empty class folders %s (--skip_bad_images).", empty)
    return tuple(name for name in names if name not in empty)


def _subdirs(path):
    return [name.rstrip("/") for name in tf.io.gfile.listdir(path) if tf.io.gfile.isdir(os.path.join(path, name))]


def _image_files(class_dir: str) -> list[str]:
    return sorted(f for f in tf.io.gfile.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))


def images_by_class(split_dir: str) -> dict[str, list[str]]:
    """{class folder name: its image file names, sorted} for every sub-folder of `split_dir`, sorted by name."""
    return {name: _image_files(os.path.join(split_dir, name)) for name in sorted(_subdirs(split_dir))}


def _list_images(split_dir: str, class_names: tuple[str, ...]) -> Examples:
    """(path, label) of every image in split_dir/<class>/, sorted by (label, file name)."""
    label_of = {name: label for label, name in enumerate(class_names)}
    present = set(_subdirs(split_dir))
    unknown = sorted(name for name in present - set(label_of) if _image_files(os.path.join(split_dir, name)))
    if unknown:
        raise ValueError(
            f"Class folders {unknown} in {split_dir} are not in the training classes {list(class_names)}. "
            "Fix: give every split the same class folders as train/."
        )
    examples = [
        (os.path.join(split_dir, name, f), label_of[name])
        for name in sorted(present & set(label_of))
        for f in _image_files(os.path.join(split_dir, name))
    ]
    if not examples:
        raise DatasetNotFoundError(
            f"Dataset image_folder: no {'/'.join(IMAGE_EXTENSIONS)} images in {split_dir}/<class>/. Fix: put "
            "the images there or pass another --data_dir."
        )
    return examples


def _hold_out(examples: Examples, validation_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Splits sorted examples into (train, eval) with a seeded permutation."""
    num_eval = round(validation_fraction * len(examples))
    if not 0 < num_eval < len(examples):
        raise ValueError(
            f"validation_fraction={validation_fraction} of {len(examples)} training images holds out "
            f"{num_eval} (rounded), leaving a split empty. Fix: choose a fraction that keeps at least one "
            "image on each side (e.g. 0.2), or provide a test/ folder."
        )
    order = np.random.RandomState(seed).permutation(len(examples))
    train, eval_ = np.sort(order[num_eval:]), np.sort(order[:num_eval])
    return [examples[i] for i in train], [examples[i] for i in eval_]


def _default_image_size(path: str) -> int:
    """The shorter side of the first training image, which must be roughly square."""
    height, width, _ = ops_image.decode_file(path).shape
    if max(height, width) > _MAX_DEFAULT_ASPECT * min(height, width):
        raise ValueError(
            f"image_folder: the first training image {path} is {height}x{width}, too far from square to "
            "define the model input size. Fix: pass image_size."
        )
    return min(height, width)


def image_folder_source(data_dir, image_size, validation_fraction, seed, skip_bad_images=False) -> Source:
    """The image folder as a Source: small images cached and augmented like CIFAR, larger like ImageNet."""
    class_names, train, eval_, dropped = image_folder_files(
        data_dir, validation_fraction=validation_fraction, seed=seed, skip_bad_images=skip_bad_images
    )
    size = image_size or _default_image_size(train[0][0])
    info = DatasetInfo(
        name="image_folder", num_classes=len(class_names), image_shape=(size, size, 3), mean=IMAGENET_MEAN,
        std=IMAGENET_STD, num_train=len(train), num_eval=len(eval_), class_names=class_names,
        dropped_images=dropped,
    )
    readers = {"read_train": _paths_reader(train), "read_eval": _paths_reader(eval_)}
    if size <= SMALL_IMAGE_SIZE:
        augment = functools.partial(ops_image.pad_crop_flip, pad=size // 8, pad_mode="REFLECT")
        decode = functools.partial(ops_image.decode_file_at_size, size=size)
        return Source(info, **readers, decode=decode, train_fn=augment, eval_fn=ops_image.identity, cache=True)
    return Source(
        info, **readers, decode=ops_image.identity,  # Each pass permutes the file paths, which are cheap to hold.
        train_fn=lambda path, seed: ops_image.inception_crop_flip(ops_image.decode_file(path), seed, size=size,
                                                                  jpeg=False),
        eval_fn=lambda path: ops_image.center_crop(ops_image.decode_file(path), size=size),
        cache=False,
    )


def _paths_reader(examples: Examples):
    paths, labels = zip(*examples)

    def read(num_pipelines: int, index: int, shuffle_seed: int) -> tf.data.Dataset:
        del shuffle_seed  # The pipeline permutes the paths itself.
        ds = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
        return shard(ds, num_pipelines, index)

    return read
