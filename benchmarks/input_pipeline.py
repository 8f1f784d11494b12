"""Measures training input-pipeline throughput (images/s): augmentation on, no model.

Runs `ffl_tf.data.load(...)`'s train pipeline on the real image-folder sample (and,
with --mock_cifar10, on CIFAR-10 faked by `tfds.testing.mock_data`), drains warm-up
batches first (tracing, filling the in-memory cache, autotuning), then times
`num_batches` batches. Compare the figure with the train step's images/s: the
pipeline must be well ahead of it.

    python -m benchmarks.input_pipeline                       # image-folder sample, batch 128
    python -m benchmarks.input_pipeline --mock_cifar10 --num_batches=300
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402

from ffl_tf import data  # noqa: E402

_SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-sample")

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.path.normpath(_SAMPLE_DIR), "Image folder (<dir>/train/<class>/*.png).")
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_integer("num_batches", 200, "Timed batches.")
flags.DEFINE_integer("warmup_batches", 50, "Untimed batches first (covers the first, cache-filling epoch).")
flags.DEFINE_bool("mock_cifar10", False, "Also time cifar10 through tfds.testing.mock_data (random pixels).")
flags.DEFINE_integer("seed", 0, "Pipeline seed.")


def measure_pipeline_throughput(dataset: tf.data.Dataset, num_batches: int, *, warmup_batches: int = 50) -> float:
    """Images per second over `num_batches` batches of (images, labels), after `warmup_batches`."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    num_images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = next(iterator)
        num_images += int(images.shape[0])
    return num_images / (time.perf_counter() - start)


def _report(label: str, train: tf.data.Dataset) -> None:
    rate = measure_pipeline_throughput(train, FLAGS.num_batches, warmup_batches=FLAGS.warmup_batches)
    print(f"{label}: {rate:,.0f} images/s (batch {FLAGS.batch_size}, {FLAGS.num_batches} batches, "
          f"{os.cpu_count()} CPUs)")


def main(argv) -> None:
    del argv
    load = dict(batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    train, _, info = data.load("image_folder", data_dir=FLAGS.data_dir, **load)
    _report(f"image_folder {FLAGS.data_dir} ({info.num_train} train images, {info.image_shape})", train)
    if FLAGS.mock_cifar10:
        with tfds.testing.mock_data(num_examples=5_000):
            train, _, _ = data.load("cifar10", **load)
            _report("cifar10 (tfds.testing.mock_data, 5000 examples)", train)


if __name__ == "__main__":
    app.run(main)
