"""Single-image latency: the int8 TFLite branch in LiteRT against the Keras fused model and the Keras branch.

Deploying one FFL branch instead of the fused classifier is the point of exporting branches; this measures
what it buys on a CPU. The network is two resnet32 branches (shared_stages=2, 32x32x3, 10 classes) with
untrained, randomly perturbed weights: latency depends on the architecture, not on the weights' values
(the int8 model is calibrated on random images for the same reason). Contenders, all at batch 1 on the same uint8 image:

  LiteRT int8 branch     export.tflite.convert(..., "int8"), set_tensor + invoke + get_tensor
  LiteRT float32 branch  the same unquantized (separates the runtime's gain from quantization's)
  Keras branch / fused   `model(x, training=False)` inside a `tf.function` (no per-call retracing, unlike
                         eager calls), result fetched with .numpy()
  ..., Keras pad         the int8 branch and the Keras fused model built with Keras "same" padding (the
                         code before the explicit PyTorch padding), same weights: what the padding costs

Each round times every contender `--runs_per_round` times, one call at a time, in a rotating order; the
figure is the median over all rounds. Both runtimes use `--num_threads` threads.

    python -m benchmarks.export_latency
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import os
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from ai_edge_litert.interpreter import Interpreter

from ffl_tf.backbones import layers
from ffl_tf.export import tflite
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.model.distillation import head_model

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["resnet32", "resnet32"], "One backbone per branch.")
flags.DEFINE_integer("shared_stages", 2, "Stages (with the stem) shared by the branches.")
flags.DEFINE_integer("num_classes", 10, "Classes of the classifiers.")
flags.DEFINE_integer("image_size", 32, "Height and width of the input images.")
flags.DEFINE_integer("warmup", 20, "Untimed calls per contender before timing.")
flags.DEFINE_integer("rounds", 20, "Rounds; each times every contender in turn.")
flags.DEFINE_integer("runs_per_round", 25, "Timed single-image calls per contender in each round.")
flags.DEFINE_integer("num_threads", os.cpu_count(), "Threads of LiteRT and of TensorFlow's intra-op pool.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the calibration images and the timed image.")
flags.DEFINE_bool("padding_before", True, "Also time the int8 branch and the Keras fused model built with Keras "
                  "\"same\" padding (the code before the explicit PyTorch padding), same weights.")


def litert_call(model: bytes, image: np.ndarray, num_threads: int) -> Callable[[], np.ndarray]:
    """One LiteRT inference on `image`, input resized to batch 1 once, outside the timed call."""
    interpreter = Interpreter(model_content=model, num_threads=num_threads)
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inputs["index"], image.shape)
    interpreter.allocate_tensors()

    def call() -> np.ndarray:
        interpreter.set_tensor(inputs["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(outputs["index"])

    return call


def keras_call(model, image: np.ndarray) -> Callable[[], np.ndarray]:
    """One Keras inference on `image`, traced once."""
    predict = tf.function(lambda x: model(x, training=False))
    x = tf.constant(image)
    return lambda: predict(x).numpy()


def time_interleaved(calls: dict[str, Callable], *, warmup: int, rounds: int, runs_per_round: int) -> dict:
    """{name: [seconds per call]}, rounds rotating which contender goes first."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(runs_per_round):
                start = time.perf_counter()
                calls[name]()
                samples[name].append(time.perf_counter() - start)
    return samples


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines on each conversion hide the table.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    keras.utils.set_random_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    model = build_ffl_model(FLAGS.backbones, FLAGS.num_classes, shape, shared_stages=FLAGS.shared_stages)
    for weight in model.weights:  # distinct values per layer, so no two layers share a weight buffer in TFLite
        weight.assign(weight.numpy() * rng.uniform(0.5, 1.5, weight.shape))
    branch, fused = head_model(model, "branch_0"), head_model(model, "fused")
    calibration = rng.integers(0, 256, (100, *shape), dtype=np.uint8)
    int8, float32 = tflite.convert(branch, "int8", calibration), tflite.convert(branch, "none")
    image = rng.integers(0, 256, (1, *shape), dtype=np.uint8)
    calls = {
        "LiteRT int8 branch_0": litert_call(int8, image, FLAGS.num_threads),
        "LiteRT float32 branch_0": litert_call(float32, image, FLAGS.num_threads),
        "Keras branch_0": keras_call(branch, image),
        "Keras fused": keras_call(fused, image),
    }
    if FLAGS.padding_before:
        with layers.keras_same_padding():
            before = build_ffl_model(FLAGS.backbones, FLAGS.num_classes, shape, shared_stages=FLAGS.shared_stages)
        before.set_weights(model.get_weights())
        calls["int8 branch_0, Keras pad"] = litert_call(
            tflite.convert(head_model(before, "branch_0"), "int8", calibration), image, FLAGS.num_threads)
        calls["Keras fused, Keras pad"] = keras_call(head_model(before, "fused"), image)
    samples = time_interleaved(calls, warmup=FLAGS.warmup, rounds=FLAGS.rounds, runs_per_round=FLAGS.runs_per_round)
    medians = {name: statistics.median(times) * 1e3 for name, times in samples.items()}
    reference = medians["LiteRT int8 branch_0"]
    print(f"{'+'.join(FLAGS.backbones)}, shared_stages={FLAGS.shared_stages}, {shape}, batch 1, "
          f"num_threads={FLAGS.num_threads}, {FLAGS.rounds}x{FLAGS.runs_per_round} calls each "
          f"(int8 file {len(int8):,} B, float32 file {len(float32):,} B)")
    print(f"{'contender':<26}{'median ms':>10}{'p10 ms':>9}{'p90 ms':>9}{'x int8':>8}")
    for name, times in samples.items():
        p10, p90 = np.percentile(times, [10, 90]) * 1e3
        print(f"{name:<26}{medians[name]:>10.3f}{p10:>9.3f}{p90:>9.3f}{medians[name] / reference:>8.2f}")


if __name__ == "__main__":
    app.run(main)
