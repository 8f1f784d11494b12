"""Input-pipeline throughput (images/s, augmentation on, no model) against FFL training throughput.

Runs `ffl_tf.data.load(...)`'s train pipeline on the real image-folder sample (and, with
--mock_cifar10, on CIFAR-10 faked by `tfds.testing.mock_data`), drains warm-up batches first
(tracing, filling the in-memory cache, autotuning), then times `num_batches` batches. Then, in
alternating rounds in the same process, it times the pipeline alone and FFL training fed by that
pipeline, and prints the ratio: the pipeline must deliver well over what training consumes.

    python -m benchmarks.input_pipeline                       # image-folder sample, batch 128
    python -m benchmarks.input_pipeline --mock_cifar10 --num_batches=300
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import os
import statistics
import time

import keras
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags

from benchmarks.common import compile_ffl
from ffl_tf import data
from ffl_tf.methods.ffl import build_ffl_model

_SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-sample")

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.path.normpath(_SAMPLE_DIR), "Image folder (<dir>/train/<class>/*.png).")
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_integer("num_batches", 200, "Timed batches.")
flags.DEFINE_integer("warmup_batches", 50, "Untimed batches first (covers the first, cache-filling epoch).")
flags.DEFINE_bool("mock_cifar10", False, "Also time cifar10 through tfds.testing.mock_data (random pixels).")
flags.DEFINE_integer("seed", 0, "Pipeline seed.")
flags.DEFINE_list("backbones", ["resnet32", "resnet32"], "FFL branches for the training side ([] to skip it).")
flags.DEFINE_integer("shared_stages", 2, "Stages shared by the branches.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds: pipeline alone, then training fed by the pipeline.")
flags.DEFINE_integer("train_steps", 10, "Timed training steps per round.")


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


def measure_training_throughput(model: keras.Model, iterator, steps: int) -> float:
    """Images per second of FFL train steps fed by `iterator` (the compiled function fit() uses)."""
    model.make_train_function()
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_function(iterator)
    float(logs["loss"])  # wait for the last step
    return steps * FLAGS.batch_size / (time.perf_counter() - start)


def compare_with_training(train: tf.data.Dataset, info: data.DatasetInfo) -> None:
    """Alternates pipeline-alone and training rounds; prints both rates and their ratio per round."""
    model = build_ffl_model(FLAGS.backbones, info.num_classes, info.image_shape,
                            shared_stages=FLAGS.shared_stages, mean=info.mean, std=info.std)
    compile_ffl(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), steps_per_epoch=100)
    iterator = iter(train)
    measure_training_throughput(model, iterator, 2)  # trace and warm up
    ratios = []
    for round_ in range(FLAGS.rounds):
        pipeline = measure_pipeline_throughput(train, FLAGS.num_batches, warmup_batches=5)
        training = measure_training_throughput(model, iterator, FLAGS.train_steps)
        ratios.append(pipeline / training)
        print(f"round {round_ + 1}: pipeline {pipeline:,.0f} images/s, FFL training {training:,.1f} images/s "
              f"({'+'.join(FLAGS.backbones)}), ratio {ratios[-1]:.1f}")
    print(f"pipeline / training: median {statistics.median(ratios):.1f}x over {FLAGS.rounds} rounds "
          "(target >= 3x)")


def _report(label: str, train: tf.data.Dataset) -> None:
    rate = measure_pipeline_throughput(train, FLAGS.num_batches, warmup_batches=FLAGS.warmup_batches)
    print(f"{label}: {rate:,.0f} images/s (batch {FLAGS.batch_size}, {FLAGS.num_batches} batches, "
          f"{os.cpu_count()} CPUs)")


def main(argv) -> None:
    del argv
    load = dict(batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    train, _, info = data.load("image_folder", data_dir=FLAGS.data_dir, **load)
    _report(f"image_folder {FLAGS.data_dir} ({info.num_train} train images, {info.image_shape})", train)
    if FLAGS.backbones:
        compare_with_training(train, info)
    if FLAGS.mock_cifar10:
        with tfds.testing.mock_data(num_examples=5_000):
            train, _, _ = data.load("cifar10", **load)
            _report("cifar10 (tfds.testing.mock_data, 5000 examples)", train)


if __name__ == "__main__":
    app.run(main)
