"""Input pipelines: uint8 images and int32 labels, batched, augmented, prefetched.

Every dataset goes through tensorflow-datasets except `image_folder`. Pixels stay
uint8 end to end: normalisation (`DatasetInfo.mean/std`) belongs to the model, so
exported models take raw pixels.

The training stream is a pure function of `seed`: pass p over the data is a
permutation seeded by `(seed, p)` and the i-th example of the stream is augmented
with the stateless seed `(seed, i)`, however tf.data parallelises the map. So
`load(..., start_step=s)` yields exactly the batches from batch s on, which is how a
resumed run continues where it stopped instead of replaying the first batches.
(ImageNet, too large to permute in memory, goes through a shuffle buffer instead and
starts a fresh shuffle when resumed.)

Offline behaviour: a tfds dataset counts as missing when `builder.as_dataset` cannot
find it. Only then is it prepared: `digits` from scikit-learn (no network),
`cifar10`/`cifar100` by downloading after a 3-second reachability probe of the
download host, `imagenet2012` from manually downloaded archives. Anything that
cannot be prepared raises `DatasetNotFoundError` within seconds instead of letting
tfds retry downloads for minutes. Asking `as_dataset` (rather than
`builder.is_prepared()`) is what keeps `tfds.testing.mock_data` working: it fakes
`as_dataset` and turns `download_and_prepare` into a no-op but leaves `is_prepared`
False, so mocked datasets never reach the network probe.
"""

from collections.abc import Callable
import dataclasses
import functools
import os
import socket
import threading
import urllib.parse

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ffl_tf import digits_dataset  # Importing it registers the `sklearn_digits` builder.

DATASETS = ("digits", "cifar10", "cifar100", "imagenet2012", "image_folder")

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# Per-channel statistics in 0..255 pixel units.
_CIFAR_MEAN_STD = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
}
# (0.485, 0.456, 0.406) * 255 and (0.229, 0.224, 0.225) * 255; also used for
# `image_folder`, whose content is unknown in advance.
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)
# Pixel mean/std of the sklearn_digits train split (population std), computed once.
_DIGITS_MEAN = (77.94,)
_DIGITS_STD = (95.91,)

_IMAGENET_SIZE = 224
# Eval crop: the central 224/256 of the shorter side, i.e. "resize to 256, crop 224".
_CENTER_CROP_FRACTION = 224 / 256
# Encoded JPEGs (~110 kB each) held by the ImageNet shuffle buffer: ~1 GB.
_IMAGENET_SHUFFLE_BUFFER = 10_000
_IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

# image_folder: up to this size, decoded images are cached in RAM and augmented
# CIFAR-style; larger ones are streamed from disk and augmented ImageNet-style.
_SMALL_IMAGE_SIZE = 64
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_EVAL_SPLIT_DIRS = ("test", "validation", "val")
# Largest aspect ratio of the first image for it to define the default image_size.
_MAX_DEFAULT_ASPECT = 4 / 3

_PROBE_TIMEOUT_SECONDS = 3.0
# A batch size larger than any dataset: batching by it gathers a whole (finite) split.
_WHOLE_DATASET = 2**62


class DatasetNotFoundError(Exception):
    """The requested data is not on disk and cannot be fetched; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset; pixels are uint8, stats in 0..255 units."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_eval: int
    class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Source:
    """A dataset's unbatched splits of (x, int32 label) and how to turn x into an image."""

    info: DatasetInfo
    train: tf.data.Dataset
    eval: tf.data.Dataset
    train_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (x, seed [2]) -> uint8 image.
    eval_fn: Callable[[tf.Tensor], tf.Tensor]  # x -> uint8 image.
    cache: bool  # x is a small decoded image: keep it in RAM.
    # None: every pass over train is a seeded permutation of all of it (train is finite and cheap to
    # re-read: cached images or file paths), so the stream can be resumed exactly. Otherwise the size of
    # a shuffle buffer over a stream too large to permute (ImageNet's encoded JPEGs).
    shuffle_buffer: int | None = None


def dataset_info(
    name: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
) -> DatasetInfo:
    """Returns `name`'s DatasetInfo without decoding it; raises DatasetNotFoundError if absent.

    Cheap unless `download` is True, which fetches and prepares missing data as `load`
    does. The embedded `digits` dataset is prepared on first use either way (seconds).
    """
    return _source(
        name,
        data_dir=data_dir,
        image_size=image_size,
        validation_fraction=validation_fraction,
        seed=seed,
        download=download,
    ).info


def load(
    name: str,
    *,
    data_dir: str | None = None,
    batch_size: int,
    eval_batch_size: int,
    seed: int = 0,
    image_size: int | None = None,
    validation_fraction: float = 0.2,
    download: bool = True,
    start_step: int = 0,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """Returns (train, eval, info); elements are (uint8 [B, H, W, C], int32 [B]).

    train is shuffled with `seed`, augmented, repeated forever and batched with
    drop_remainder, starting at its batch `start_step` (see the module docstring);
    eval is neither augmented nor repeated and keeps its last partial batch. `seed`
    also chooses the image_folder hold-out split.
    """
    if batch_size < 1 or eval_batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size} and eval_batch_size={eval_batch_size} must both be >= 1."
        )
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    source = _source(
        name,
        data_dir=data_dir,
        image_size=image_size,
        validation_fraction=validation_fraction,
        seed=seed,
        download=download,
        start_step=start_step,
    )
    train = _train_pipeline(source, batch_size=batch_size, seed=seed, start_step=start_step)
    return train, _eval_pipeline(source, batch_size=eval_batch_size), source.info


# --- Augmentation and cropping (stateless: `seed` is an int [2] tensor). ---


def pad_crop_flip(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    pad: int,
    pad_mode: str = "REFLECT",
    flip: bool = True,
) -> tf.Tensor:
    """CIFAR-style augmentation: pad by `pad`, crop back to the input size, maybe flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=pad_mode)
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    cropped = tf.ensure_shape(cropped, image.shape)
    if flip:
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)
    return cropped


def inception_crop(
    data: tf.Tensor,
    seed: tf.Tensor,
    *,
    size: int,
    jpeg: bool = False,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Random-resized crop to [size, size, 3] of a decoded image, or of JPEG bytes if `jpeg`.

    With `jpeg`, only the crop window is decoded, which is much cheaper than
    decoding the whole photo.
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        _image_shape(data, jpeg),
        bounding_boxes=tf.zeros([0, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    return _resize_uint8(_crop(data, begin, crop_size, jpeg), size)


def center_crop(
    data: tf.Tensor,
    *,
    size: int,
    jpeg: bool = False,
    crop_fraction: float = _CENTER_CROP_FRACTION,
) -> tf.Tensor:
    """Central square covering `crop_fraction` of the shorter side, resized to [size, size, 3].

    With the default fraction 224/256 this is "resize the shorter side to 256,
    center-crop 224", up to resampling, at a fraction of the cost.
    """
    shape = _image_shape(data, jpeg)
    shorter = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    side = tf.cast(tf.round(crop_fraction * shorter), tf.int32)
    begin = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, 0])
    return _resize_uint8(_crop(data, begin, tf.stack([side, side, -1]), jpeg), size)


def _inception_crop_flip(data, seed, *, size, jpeg):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = inception_crop(data, crop_seed, size=size, jpeg=jpeg)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _image_shape(data, jpeg):
    return tf.image.extract_jpeg_shape(data) if jpeg else tf.shape(data)


def _crop(data, begin, size, jpeg):
    """Crops [begin, begin + size) ([y, x, 0], [h, w, -1]) of a decoded image or JPEG bytes."""
    if jpeg:
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.image.decode_and_crop_jpeg(data, window, channels=3)
    return tf.slice(data, begin, size)


def _resize_uint8(image, size):
    resized = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.ensure_shape(tf.saturate_cast(tf.round(resized), tf.uint8), (size, size, 3))


def _decode_file(path):
    """Reads and decodes a PNG/JPEG/BMP/GIF file to uint8 RGB (grey-scale is expanded)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def _decode_file_at_size(path, size):
    """Decodes an image file, resizing it to [size, size] (aspect not kept) if it differs."""
    image = _decode_file(path)
    is_size = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(is_size, lambda: image, lambda: _resize_uint8(image, size))
    return tf.ensure_shape(image, (size, size, 3))


def _identity(image):
    return image


# --- Pipelines. ---


def _train_pipeline(source: _Source, *, batch_size: int, seed: int, start_step: int) -> tf.data.Dataset:
    """Caches, shuffles each pass, augments with per-element seeds (seed, index), batches.

    Starts at batch `start_step` of the stream. Passes that are seeded permutations reach it
    exactly by skipping cached images or file paths, which costs no decoding or augmentation.
    ImageNet's buffered shuffle cannot be replayed (its order also depends on tfds's file
    interleaving), so it starts a fresh shuffle, of its files too, seeded by the start step,
    rather than read up to a whole pass of JPEGs to skip.
    """
    examples = source.train.cache() if source.cache else source.train
    start = start_step * batch_size
    if source.shuffle_buffer is None:
        first_pass, offset = divmod(start, source.info.num_train)
        ds = _permuted_passes(examples, seed, first_pass).skip(offset)
    else:
        ds = examples.shuffle(source.shuffle_buffer, seed=seed + start_step).repeat()

    def augment(index, example):
        x, label = example
        return source.train_fn(x, tf.stack([tf.constant(seed, tf.int64), index])), label

    ds = ds.enumerate(start).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _permuted_passes(examples: tf.data.Dataset, seed: int, first_pass: int) -> tf.data.Dataset:
    """Passes first_pass, first_pass + 1, ... over `examples`, pass p in the order seeded by (seed, p).

    A pure function of (seed, p), unlike `Dataset.shuffle`, whose order depends on how many
    passes the same iterator made before. Each pass gathers the dataset into one batch and
    permutes it: with the cache, three copies of the split in memory while permuting, one
    more than a shuffle buffer holding all of it.
    For 50,000 CIFAR images a pass takes about 0.7 s of one core, overlapped with training.
    """
    everything = examples.batch(_WHOLE_DATASET)

    def one_pass(index):
        def permute(x, label):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(label)[0]), seed=tf.stack([tf.constant(seed, tf.int64), index])
            )
            return tf.gather(x, order), tf.gather(label, order)

        return everything.map(permute).unbatch()

    return tf.data.Dataset.counter(first_pass).flat_map(one_pass)


def _eval_pipeline(source: _Source, *, batch_size: int) -> tf.data.Dataset:
    ds = source.eval.map(
        lambda x, label: (source.eval_fn(x), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    if source.cache:
        ds = ds.cache()
    return ds.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _source(name, *, data_dir, image_size, validation_fraction, seed, download, start_step=0) -> _Source:
    if name == "digits":
        return _digits_source(data_dir, image_size)
    if name in ("cifar10", "cifar100"):
        return _cifar_source(name, data_dir, image_size, download)
    if name == "imagenet2012":
        return _imagenet_source(data_dir, image_size, seed, download, start_step)
    if name == "image_folder":
        return _image_folder_source(data_dir, image_size, validation_fraction, seed)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASETS}.")


def _int32_label(x, label):
    return x, tf.cast(label, tf.int32)


def _check_native_size(name, image_size, native):
    if image_size not in (None, native):
        raise ValueError(
            f"{name} images are {native}x{native}; image_size={image_size} is not supported "
            "for it. Leave image_size unset."
        )


# --- tfds datasets. ---


def _open_split(builder, split, prepare, **as_dataset_kwargs) -> tf.data.Dataset:
    """Returns `split` as (x, int32 label), calling `prepare()` first if tfds finds no data."""
    open_split = functools.partial(
        builder.as_dataset, split=split, as_supervised=True, **as_dataset_kwargs
    )
    try:
        ds = open_split()
    except AssertionError:  # tfds's "could not find data in <data_dir>".
        ds = None
    if ds is None:
        prepare()
        ds = open_split()
    return ds.map(_int32_label)


def _split_size(builder, split, ds) -> int:
    """Examples in `split`: from tfds metadata, else (tfds.testing.mock_data) the cardinality."""
    if split in builder.info.splits:
        return builder.info.splits[split].num_examples
    return int(ds.cardinality())


def _digits_source(data_dir, image_size) -> _Source:
    _check_native_size("digits", image_size, 8)
    builder = tfds.builder(digits_dataset.SklearnDigits.name, data_dir=data_dir)
    read_config = tfds.ReadConfig(try_autocache=False)  # Decoded images are cached instead.
    prepare = functools.partial(_prepare_digits, builder)
    train = _open_split(builder, "train", prepare, read_config=read_config)
    eval_ = _open_split(builder, "test", prepare, read_config=read_config)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(8, 8, 1),
        mean=_DIGITS_MEAN,
        std=_DIGITS_STD,
        num_train=_split_size(builder, "train", train),
        num_eval=_split_size(builder, "test", eval_),
        class_names=tuple(str(d) for d in range(10)),
    )
    # Digits are not mirror-symmetric: pad by one black pixel and shift, never flip.
    augment = functools.partial(pad_crop_flip, pad=1, pad_mode="CONSTANT", flip=False)
    return _Source(info, train, eval_, augment, _identity, cache=True)


def _prepare_digits(builder) -> None:
    logging.info("Preparing %s from scikit-learn into %s", builder.name, builder.data_dir)
    # try_download_gcs=False: without network, tfds's GCS lookup could stall.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )


def _cifar_source(name, data_dir, image_size, download) -> _Source:
    _check_native_size(name, image_size, 32)
    builder = tfds.builder(name, data_dir=data_dir)
    read_config = tfds.ReadConfig(try_autocache=False)  # Decoded images are cached instead.
    prepare = functools.partial(_download_cifar, builder, download=download)
    train = _open_split(builder, "train", prepare, read_config=read_config)
    eval_ = _open_split(builder, "test", prepare, read_config=read_config)
    labels = builder.info.features["label"]
    mean, std = _CIFAR_MEAN_STD[name]
    info = DatasetInfo(
        name=name,
        num_classes=labels.num_classes,
        image_shape=(32, 32, 3),
        mean=mean,
        std=std,
        num_train=_split_size(builder, "train", train),
        num_eval=_split_size(builder, "test", eval_),
        class_names=CIFAR10_CLASSES if name == "cifar10" else tuple(labels.names),
    )
    augment = functools.partial(pad_crop_flip, pad=4, pad_mode="REFLECT")
    return _Source(info, train, eval_, augment, _identity, cache=True)


def _download_cifar(builder, *, download: bool) -> None:
    """Downloads and prepares CIFAR, failing fast when that cannot work."""
    if not download:
        raise DatasetNotFoundError(_offline_fix(builder, "downloading was not requested (download=False)"))
    # The builder's homepage and archive share a host (www.cs.toronto.edu).
    host = urllib.parse.urlparse(builder.info.homepage).hostname or "www.cs.toronto.edu"
    if not _reachable(host, 443):
        raise DatasetNotFoundError(
            _offline_fix(builder, f"its download host {host}:443 is unreachable (no network?)")
        )
    logging.info("Downloading and preparing %s into %s", builder.name, builder.data_dir)
    builder.download_and_prepare()


def _offline_fix(builder, reason: str) -> str:
    name, root = builder.name, builder.data_dir_root
    return (
        f"Dataset {name} is not prepared in data_dir {root} (looked for {builder.data_dir}) "
        f"and cannot be downloaded: {reason}. Fix: on a machine with network run "
        f"`tfds build {name} --data_dir=DIR` (or `python -c \"import tensorflow_datasets as "
        f"tfds; tfds.builder('{name}', data_dir='DIR').download_and_prepare()\"`), copy DIR "
        f"to this machine and pass --data_dir=DIR (the directory containing {name}/)."
    )


def _reachable(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port opens within a few seconds, DNS included.

    The connect runs in a daemon thread because name resolution ignores socket
    timeouts and can block far longer on a machine without network.
    """
    opened = threading.Event()

    def connect():
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_SECONDS).close()
            opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_SECONDS)
    return opened.is_set()


def _imagenet_source(data_dir, image_size, seed, download, start_step) -> _Source:
    size = image_size or _IMAGENET_SIZE
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    prepare = functools.partial(_prepare_imagenet, builder, download=download)
    jpeg_bytes = {"image": tfds.decode.SkipDecoding()}  # Decoding happens inside the crop.
    train = _open_split(builder, "train", prepare, decoders=jpeg_bytes, shuffle_files=True,
                        # A resumed run reads the files in a new order, not the first pass's again.
                        read_config=tfds.ReadConfig(shuffle_seed=seed + start_step))
    eval_ = _open_split(builder, "validation", prepare, decoders=jpeg_bytes)
    labels = builder.info.features["label"]
    info = DatasetInfo(
        name="imagenet2012",
        num_classes=labels.num_classes,
        image_shape=(size, size, 3),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        num_train=_split_size(builder, "train", train),
        num_eval=_split_size(builder, "validation", eval_),
        class_names=tuple(labels.names),
    )
    return _Source(
        info,
        train,
        eval_,
        functools.partial(_inception_crop_flip, size=size, jpeg=True),
        functools.partial(center_crop, size=size, jpeg=True),
        cache=False,
        shuffle_buffer=_IMAGENET_SHUFFLE_BUFFER,
    )


def _prepare_imagenet(builder, *, download: bool) -> None:
    """Prepares ImageNet from the manually downloaded archives (tfds cannot download it)."""
    manual_dir = builder.data_dir_root / "downloads" / "manual"  # tfds's default manual_dir.
    missing = [f for f in _IMAGENET_ARCHIVES if not (manual_dir / f).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"Dataset imagenet2012 is not prepared in data_dir {builder.data_dir_root} "
            f"(looked for {builder.data_dir}) and its manually downloaded archives "
            f"{', '.join(missing)} are missing from {manual_dir}. ImageNet cannot be "
            "downloaded automatically. Fix: register at https://image-net.org/download-images, "
            f"download {' and '.join(_IMAGENET_ARCHIVES)}, put them in "
            "DIR/downloads/manual/ and pass --data_dir=DIR (tfds prepares them on first use, "
            "which takes hours); or pass --data_dir pointing at a tfds data directory that "
            "already holds a prepared imagenet2012/."
        )
    if not download:
        raise DatasetNotFoundError(
            f"Dataset imagenet2012 is not prepared in data_dir {builder.data_dir_root}; its "
            f"archives are in {manual_dir} but preparing them was not allowed (download=False). "
            "Fix: pass download=True once (tfds then converts them, which takes hours), or run "
            f"`tfds build imagenet2012 --data_dir={builder.data_dir_root}`."
        )
    logging.warning("Preparing imagenet2012 from %s into %s; this takes hours.",
                    manual_dir, builder.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )


# --- image_folder. ---


def image_folder_files(
    data_dir: str,
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[tuple[str, ...], list[tuple[str, int]], list[tuple[str, int]]]:
    """Returns (class_names, train, eval) of `<data_dir>/<split>/<class>/<image>`.

    class_names are the sorted subfolders of `train/`. eval is the first of `test/`,
    `validation/`, `val/` that exists; otherwise round(validation_fraction * N) of the
    N train files, chosen by `np.random.RandomState(seed)` (a frozen stream) from the
    files sorted by (class, file name), so the hold-out never depends on listing order.

    We list files ourselves instead of using `tfds.folder_dataset.ImageFolder`: it only
    serves whole folders as splits (no seeded hold-out), takes labels from the union of
    all splits rather than `train/`, and pre-shuffles examples with a fixed seed of its own.
    """
    if not data_dir:
        raise DatasetNotFoundError(
            "Dataset image_folder needs a directory: pass --data_dir=DIR (data_dir=DIR) laid "
            "out as DIR/train/<class>/<image>.png|jpg, optionally with DIR/test/<class>/..."
        )
    train_dir = os.path.join(data_dir, "train")
    if not tf.io.gfile.isdir(train_dir):
        raise DatasetNotFoundError(
            f"Dataset image_folder: {train_dir} is not a directory (data_dir={data_dir!r}). "
            "Fix: pass --data_dir=DIR where DIR/train/<class>/<image>.png|jpg holds the "
            "training images (optionally DIR/test/<class>/... the evaluation images)."
        )
    class_names = tuple(sorted(_subdirs(train_dir)))
    train = _list_images(train_dir, class_names)
    for split in _EVAL_SPLIT_DIRS:
        split_dir = os.path.join(data_dir, split)
        if tf.io.gfile.isdir(split_dir):
            return class_names, train, _list_images(split_dir, class_names)
    return (class_names, *_hold_out(train, validation_fraction, seed))


def _subdirs(path):
    return [
        name.rstrip("/")
        for name in tf.io.gfile.listdir(path)
        if tf.io.gfile.isdir(os.path.join(path, name))
    ]


def _list_images(split_dir, class_names) -> list[tuple[str, int]]:
    """(path, label) of every image in split_dir/<class>/, sorted by (label, file name)."""
    label_of = {name: label for label, name in enumerate(class_names)}
    unknown = sorted(set(_subdirs(split_dir)) - set(label_of))
    if unknown:
        raise ValueError(
            f"Class folders {unknown} in {split_dir} are not in the training classes "
            f"{list(class_names)}. Fix: give every split the same class folders as train/."
        )
    examples = []
    for name in sorted(set(_subdirs(split_dir))):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            f for f in tf.io.gfile.listdir(class_dir) if f.lower().endswith(_IMAGE_EXTENSIONS)
        )
        examples += [(os.path.join(class_dir, f), label_of[name]) for f in files]
    if not examples:
        raise DatasetNotFoundError(
            f"Dataset image_folder: no {'/'.join(_IMAGE_EXTENSIONS)} images in "
            f"{split_dir}/<class>/. Fix: put the images there or pass another --data_dir."
        )
    return examples


def _hold_out(examples, validation_fraction, seed):
    """Splits sorted examples into (train, eval) with a seeded permutation."""
    num_eval = round(validation_fraction * len(examples))
    if not 0 < num_eval < len(examples):
        raise ValueError(
            f"validation_fraction={validation_fraction} of {len(examples)} training images "
            f"holds out {num_eval} (rounded), leaving a split empty. Fix: choose a fraction that "
            "keeps at least one image on each side (e.g. 0.2), or provide a test/ folder."
        )
    order = np.random.RandomState(seed).permutation(len(examples))
    train, eval_ = np.sort(order[num_eval:]), np.sort(order[:num_eval])
    return [examples[i] for i in train], [examples[i] for i in eval_]


def _default_image_size(path) -> int:
    """The shorter side of the first training image, which must be roughly square."""
    height, width, _ = _decode_file(path).shape
    if max(height, width) > _MAX_DEFAULT_ASPECT * min(height, width):
        raise ValueError(
            f"image_folder: the first training image {path} is {height}x{width}, too far "
            "from square to define the model input size. Fix: pass image_size."
        )
    return min(height, width)


def _image_folder_source(data_dir, image_size, validation_fraction, seed) -> _Source:
    class_names, train, eval_ = image_folder_files(
        data_dir, validation_fraction=validation_fraction, seed=seed
    )
    size = image_size or _default_image_size(train[0][0])
    info = DatasetInfo(
        name="image_folder",
        num_classes=len(class_names),
        image_shape=(size, size, 3),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        num_train=len(train),
        num_eval=len(eval_),
        class_names=class_names,
    )
    train_ds, eval_ds = (_paths_dataset(examples) for examples in (train, eval_))
    if size <= _SMALL_IMAGE_SIZE:
        def decode(path, label):
            return _decode_file_at_size(path, size), label

        train_ds = train_ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        eval_ds = eval_ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        augment = functools.partial(pad_crop_flip, pad=size // 8, pad_mode="REFLECT")
        return _Source(info, train_ds, eval_ds, augment, _identity, cache=True)
    return _Source(
        info,
        train_ds,
        eval_ds,
        lambda path, seed: _inception_crop_flip(_decode_file(path), seed, size=size, jpeg=False),
        lambda path: center_crop(_decode_file(path), size=size),
        cache=False,  # Each pass permutes the file paths, which are cheap to hold.
    )


def _paths_dataset(examples) -> tf.data.Dataset:
    paths, labels = zip(*examples)
    return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
