"""Evaluation throughput against training throughput, side by side: evaluation must not be the slow part.

Times `DistillationModel`'s compiled test function (what `evaluate()` and fit()'s validation run: forward
pass in inference mode, the loss, and every evaluation metric: accuracy and ECE per head, the branches'
disagreement) on one fixed batch of `--eval_batch_size` images with padding weights, against its train
function on `--batch_size` images, in alternating rounds (benchmarks/timing.py). Target: evaluation at
least 3x training images/s.

    python -m benchmarks.evaluation                          # 2 x resnet32, shared_stages=2
    python -m benchmarks.evaluation --eval_batch_size=100    # the pre-change default
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import statistics
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import timing
from benchmarks.common import compile_ffl, train_step_fn
from ffl_tf.methods.ffl import build_ffl_model

TARGET = 3.0

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Training images per step.")
flags.DEFINE_integer("eval_batch_size", 500, "Evaluation images per step.")
flags.DEFINE_integer("rounds", 10, "Alternating rounds to time.")
flags.DEFINE_integer("steps_per_round", 5, "Timed steps per side per round.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16"], "Keras policy.")


def test_step_fn(model: keras.Model, batch: tuple):
    """One call of the model's compiled test function on `batch` (with weights: real examples, 1)."""
    images, labels = batch
    iterator = iter(tf.data.Dataset.from_tensors((images, labels, np.ones(len(labels), "float32"))).repeat())
    model.make_test_function()
    test_function = model.test_function
    return lambda: float(test_function(iterator)["loss"])


def main(argv: Sequence[str]) -> None:
    del argv
    keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
    print(timing.cpu_description(), flush=True)
    keras.utils.set_random_seed(0)
    model = build_ffl_model(["resnet32", "resnet32"], 100, (32, 32, 3), shared_stages=2)
    compile_ffl(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), 391)
    steps = {"training": train_step_fn(model, timing.fixed_batch(FLAGS.batch_size, 100)),
             "evaluation": test_step_fn(model, timing.fixed_batch(FLAGS.eval_batch_size, 100))}
    for side, step in steps.items():
        start = time.perf_counter()
        step()
        print(f"{side}: first step (trace) {time.perf_counter() - start:.1f} s", flush=True)
        timing.time_steps(step, 2)
    timers = {side: (lambda k, step=step: timing.time_steps(step, k)) for side, step in steps.items()}
    times = timing.run_rounds(timers, FLAGS.rounds, FLAGS.steps_per_round)
    for side, size in (("training", FLAGS.batch_size), ("evaluation", FLAGS.eval_batch_size)):
        print(f"{side}: {size / timing.median_step(times[side], 'wall'):.1f} images/s (batch {size})")
    ratios = [r * FLAGS.eval_batch_size / FLAGS.batch_size
              for r in timing.per_round_ratios(times["training"], times["evaluation"], "wall")]
    print(f"evaluation images/s / training images/s: {statistics.median(ratios):.2f} (median of "
          f"{len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f}; target >= {TARGET})")


if __name__ == "__main__":
    app.run(main)
