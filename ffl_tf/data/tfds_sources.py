"""tensorflow-datasets sources: the embedded digits, CIFAR, ImageNet, and any tfds image-classification dataset.

Offline behaviour: a dataset counts as missing when `builder.as_dataset` cannot find it. Only then is it
prepared: `digits` from scikit-learn (no network), ImageNet from manually downloaded archives, anything
else by downloading after a 3-second reachability probe of its host. Anything that cannot be prepared
raises `DatasetNotFoundError` within seconds instead of letting tfds retry downloads for minutes. Asking
`as_dataset` (rather than `builder.is_prepared()`) is what keeps `tfds.testing.mock_data` working: it
fakes `as_dataset` and turns `download_and_prepare` into a no-op but leaves `is_prepared` False, so mocked
datasets never reach the network probe.

Images are read undecoded (`SkipDecoding`) and decoded by the pipeline after sharding, so under several
workers each decodes only its share.
"""

import contextlib
import functools
import io
import urllib.parse

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from ffl_tf.data import digits, ops_image
from ffl_tf.data.source import DatasetInfo, DatasetNotFoundError, Source, int32_label, shard
from ffl_tf.utils import reachability

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics in 0..255 pixel units.
CIFAR_MEAN_STD = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
}
# (0.485, 0.456, 0.406) * 255 and (0.229, 0.224, 0.225) * 255: for data whose statistics are not known.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Pixel mean/std of the sklearn_digits train split (population std), computed once.
DIGITS_MEAN = (77.94,)
DIGITS_STD = (95.91,)

IMAGENET_SIZE = 224
# Encoded JPEGs (~110 kB each) held by the ImageNet shuffle buffer: ~1 GB.
IMAGENET_SHUFFLE_BUFFER = 10_000
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# Up to this size, decoded images are cached in RAM and augmented CIFAR-style; larger ones ImageNet-style.
SMALL_IMAGE_SIZE = 64


def digits_source(data_dir, image_size) -> Source:
    """The embedded handwritten digits (8x8 grey-scale), shifted by a pixel but never flipped."""
    _check_native_size("digits", image_size, 8)
    builder = tfds.builder(digits.SklearnDigits.name, data_dir=data_dir)
    ensure_prepared(builder, "train", functools.partial(_prepare_digits, builder))
    info = DatasetInfo(
        name="digits", num_classes=10, image_shape=(8, 8, 1), mean=DIGITS_MEAN, std=DIGITS_STD,
        num_train=split_size(builder, "train"), num_eval=split_size(builder, "test"),
        class_names=tuple(str(d) for d in range(10)),
    )
    augment = functools.partial(ops_image.pad_crop_flip, pad=1, pad_mode="CONSTANT", flip=False)
    return _small_image_source(builder, info, "train", "test", augment)


def cifar_source(name, data_dir, image_size, download) -> Source:
    """CIFAR-10/100 with their own statistics, augmented by reflect-pad 4, random crop and flip."""
    _check_native_size(name, image_size, 32)
    builder = tfds.builder(name, data_dir=data_dir)
    ensure_prepared(builder, "train", functools.partial(download_and_prepare, builder, download=download))
    labels = builder.info.features["label"]
    mean, std = CIFAR_MEAN_STD[name]
    info = DatasetInfo(
        name=name, num_classes=labels.num_classes, image_shape=(32, 32, 3), mean=mean, std=std,
        num_train=split_size(builder, "train"), num_eval=split_size(builder, "test"),
        class_names=CIFAR10_CLASSES if name == "cifar10" else tuple(labels.names),
    )
    augment = functools.partial(ops_image.pad_crop_flip, pad=4, pad_mode="REFLECT")
    return _small_image_source(builder, info, "train", "test", augment)


def imagenet_source(data_dir, image_size, download) -> Source:
    """ILSVRC2012: random-resized crops decoded from the JPEG bytes, a shuffle buffer over shuffled files."""
    size = image_size or IMAGENET_SIZE
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    ensure_prepared(builder, "validation", functools.partial(_prepare_imagenet, builder, download=download))
    labels = builder.info.features["label"]
    info = DatasetInfo(
        name="imagenet2012", num_classes=labels.num_classes, image_shape=(size, size, 3), mean=IMAGENET_MEAN,
        std=IMAGENET_STD, num_train=split_size(builder, "train"), num_eval=split_size(builder, "validation"),
        class_names=tuple(labels.names),
    )
    return Source(
        info,
        # A resumed run reads the files in a new order (shuffle seed = seed + start step), not the first pass's.
        read_train=reader(builder, "train", shuffle_files=True),
        read_eval=reader(builder, "validation"),
        decode=ops_image.identity,
        train_fn=functools.partial(ops_image.inception_crop_flip, size=size, jpeg=True),
        eval_fn=functools.partial(ops_image.center_crop, size=size, jpeg=True),
        cache=False,
        shuffle_buffer=IMAGENET_SHUFFLE_BUFFER,
    )


def _small_image_source(builder, info: DatasetInfo, train_split: str, eval_split: str, augment) -> Source:
    decode_image = builder.info.features["image"].decode_example
    return Source(
        info, read_train=reader(builder, train_split), read_eval=reader(builder, eval_split),
        decode=lambda encoded: tf.ensure_shape(decode_image(encoded), info.image_shape),
        train_fn=augment, eval_fn=ops_image.identity, cache=True,
    )


def reader(builder, split: str, *, shuffle_files: bool = False):
    """Reads `split`'s (encoded image, label) pairs, one input pipeline's share: whole files when there are
    enough of them, else every N-th element."""

    def read(num_pipelines: int, index: int, shuffle_seed: int) -> tf.data.Dataset:
        by_files = num_pipelines > 1 and _num_files(builder, split) >= num_pipelines
        context = tf.distribute.InputContext(num_pipelines, index, 1) if by_files else None
        ds = builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False, input_context=context),
        )
        ds = ds.map(lambda example: (example["image"], example["label"]))
        return (ds if by_files else shard(ds, num_pipelines, index)).map(int32_label)

    return read


def _num_files(builder, split: str) -> int:
    try:
        return builder.info.splits[split].num_shards
    except (KeyError, ValueError):  # tfds.testing.mock_data has no file metadata
        return 0


def ensure_prepared(builder, split: str, prepare) -> None:
    """Calls `prepare()` if tfds finds no data for `split` (tfds's own error is an AssertionError)."""
    try:
        builder.as_dataset(split=split)
    except AssertionError:
        prepare()


def split_size(builder, split: str) -> int:
    """Examples in `split`: from tfds metadata, else (tfds.testing.mock_data) the cardinality."""
    if split in builder.info.splits:
        return builder.info.splits[split].num_examples
    return int(builder.as_dataset(split=split).cardinality())


def _check_native_size(name, image_size, native):
    if image_size not in (None, native):
        raise ValueError(
            f"{name} images are {native}x{native}; image_size={image_size} is not supported for it. "
            "Leave image_size unset."
        )


def _prepare_digits(builder) -> None:
    logging.info("Preparing %s from scikit-learn into %s", builder.name, builder.data_dir)
    # try_download_gcs=False: without network, tfds's GCS lookup could stall. tfds prints its own
    # "Downloading and preparing" lines, which say nothing more than the line above.
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def download_and_prepare(builder, *, download: bool) -> None:
    """Downloads and prepares a tfds dataset, failing fast when that cannot work."""
    if not download:
        raise DatasetNotFoundError(offline_fix(builder, "downloading was not requested (download=False)"))
    # The homepage and the data usually share a host (www.cs.toronto.edu for CIFAR).
    host = urllib.parse.urlparse(builder.info.homepage or "").hostname or "storage.googleapis.com"
    if not reachability.reachable(host, 443):
        raise DatasetNotFoundError(offline_fix(builder, f"its download host {host}:443 is unreachable (no network?)"))
    logging.info("Downloading and preparing %s into %s", builder.name, builder.data_dir)
    builder.download_and_prepare()


def offline_fix(builder, reason: str) -> str:
    """The one-paragraph fix for a dataset that is not prepared and cannot be downloaded here."""
    name, root = builder.name, builder.data_dir_root
    return (
        f"Dataset {name} is not prepared in data_dir {root} (looked for {builder.data_dir}) and cannot be "
        f"downloaded: {reason}. Fix: on a machine with network run `tfds build {name} --data_dir=DIR` (or "
        f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='DIR')"
        f".download_and_prepare()\"`), copy DIR to this machine and pass --data_dir=DIR (the directory "
        f"containing {name}/)."
    )


def _prepare_imagenet(builder, *, download: bool) -> None:
    """Prepares ImageNet from the manually downloaded archives (tfds cannot download it)."""
    manual_dir = builder.data_dir_root / "downloads" / "manual"  # tfds's default manual_dir.
    missing = [f for f in IMAGENET_ARCHIVES if not (manual_dir / f).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"Dataset imagenet2012 is not prepared in data_dir {builder.data_dir_root} (looked for "
            f"{builder.data_dir}) and its manually downloaded archives {', '.join(missing)} are missing from "
            f"{manual_dir}. ImageNet cannot be downloaded automatically. Fix: register at "
            f"https://image-net.org/download-images, download {' and '.join(IMAGENET_ARCHIVES)}, put them in "
            "DIR/downloads/manual/ and pass --data_dir=DIR (tfds prepares them on first use, which takes "
            "hours); or pass --data_dir pointing at a tfds data directory that already holds a prepared "
            "imagenet2012/."
        )
    if not download:
        raise DatasetNotFoundError(
            f"Dataset imagenet2012 is not prepared in data_dir {builder.data_dir_root}; its archives are in "
            f"{manual_dir} but preparing them was not allowed (download=False). Fix: pass download=True once "
            f"(tfds then converts them, which takes hours), or run `tfds build imagenet2012 "
            f"--data_dir={builder.data_dir_root}`."
        )
    logging.warning("Preparing imagenet2012 from %s into %s; this takes hours.", manual_dir, builder.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
