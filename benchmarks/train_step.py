"""ffl_tf's FFL train step against a bare Keras loop of the same network and loss, and against the code as it
was before two changes (Keras's batch normalization; Keras "same" padding), side by side in one process.

- `ffl_tf`: `DistillationModel`'s compiled train function (`make_train_function()`, what `fit()` runs):
  the loss, L2 weight decay, loss scaling when mixed_float16, the division by the number of replicas, and
  every metric (loss parts, accuracy per head, the all-reduce of their states).
- `bare loop`: the same network object's forward pass, `losses.ffl_loss` plus the same L2 penalty, one
  gradient and one optimizer update in a `tf.function`: what a user writing the loop by hand would run.
  The difference is ffl_tf's framework tax; the target is ffl_tf >= 0.97x its speed.
- `Keras BN`: the same network built with Keras's batch normalization computation
  (`batch_norm.keras_batch_norm()`), trained by `DistillationModel`: what the fused batch norm saves.
- `Keras padding`: the same network with Keras "same" padding in its strided layers
  (`layers.keras_same_padding()`) instead of the explicit PyTorch padding: what the padding layers cost.

Every side trains on one fixed uint8 batch; rounds alternate the sides (benchmarks/timing.py).

    python -m benchmarks.train_step                                  # 2 x resnet32, shared_stages=2, batch 128
    python -m benchmarks.train_step --mixed_precision=mixed_bfloat16
    python -m benchmarks.train_step --sides="ffl_tf,Keras BN,Keras padding"
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import contextlib
import time
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from absl import app, flags

from benchmarks import timing
from benchmarks.common import compile_ffl, train_step_fn
from ffl_tf.backbones import batch_norm, layers
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.model import losses

STEPS_PER_EPOCH = 391
TARGET = 0.97  # ffl_tf's speed at least this fraction of the bare loop's

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["resnet32", "resnet32"], "One backbone per branch.")
flags.DEFINE_integer("shared_stages", 2, "Stages (with the stem) shared by the branches.")
flags.DEFINE_integer("batch_size", 128, "Images per train step.")
flags.DEFINE_integer("num_classes", 100, "Classes of the classifiers.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps per side after tracing.")
flags.DEFINE_integer("rounds", 10, "Alternating rounds to time.")
flags.DEFINE_integer("steps_per_round", 5, "Timed steps per side per round.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"], "Keras policy.")
flags.DEFINE_list("sides", ["ffl_tf", "bare loop"], "Sides to time: ffl_tf, bare loop, Keras BN, Keras padding.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the batch.")


def sgd() -> keras.optimizers.Optimizer:
    """The official recipe's optimizer: SGD 0.1, Nesterov momentum 0.9; each side gets its own."""
    return keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)


def build(before: contextlib.AbstractContextManager | None = None) -> keras.Model:
    """The FFL network of the flags, compiled; built inside `before` (the code before a change) if given."""
    keras.utils.set_random_seed(FLAGS.seed)
    with before or contextlib.nullcontext():
        model = build_ffl_model(FLAGS.backbones, FLAGS.num_classes, (32, 32, 3), shared_stages=FLAGS.shared_stages)
    compile_ffl(model, sgd(), STEPS_PER_EPOCH)
    return model


def bare_step(model: keras.Model, batch: tuple) -> Callable[[], float]:
    """A hand-written train step on `model`'s network: forward, FFL loss + L2, gradient, update. No metrics."""
    optimizer = sgd()
    optimizer.build(model.trainable_variables)
    fusion_ids = {id(v) for v in model.get_layer("fusion").trainable_variables}
    images, labels = (tf.constant(t) for t in batch)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            heads = model(images, training=True)
            kd_weight = losses.rampup_weight(tf.cast(optimizer.iterations, tf.float32) / STEPS_PER_EPOCH, 80.0)
            loss, _ = losses.ffl_loss([heads["branch_0"], heads["branch_1"]], heads["fused"], labels,
                                      temperature=3.0, kd_weight=kd_weight, ensemble=heads["ensemble"])
            loss += losses.l2_penalty([v for v in model.trainable_variables if id(v) not in fusion_ids], 1e-4)
            loss += losses.l2_penalty([v for v in model.trainable_variables if id(v) in fusion_ids], 1e-5)
            scaled = optimizer.scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
        return loss

    return lambda: float(step())


def main(argv: Sequence[str]) -> None:
    del argv
    keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
    print(timing.cpu_description())
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; backbones={','.join(FLAGS.backbones)} "
          f"shared_stages={FLAGS.shared_stages} batch_size={FLAGS.batch_size} policy={FLAGS.mixed_precision}",
          flush=True)
    batch = timing.fixed_batch(FLAGS.batch_size, FLAGS.num_classes, seed=FLAGS.seed)
    makers = {"ffl_tf": lambda: train_step_fn(build(), batch), "bare loop": lambda: bare_step(build(), batch),
              "Keras BN": lambda: train_step_fn(build(batch_norm.keras_batch_norm()), batch),
              "Keras padding": lambda: train_step_fn(build(layers.keras_same_padding()), batch)}
    steps = {side: makers[side]() for side in FLAGS.sides}
    for side, step in steps.items():
        start = time.perf_counter()
        step()
        print(f"{side}: first step (trace) {time.perf_counter() - start:.1f} s", flush=True)
        timing.time_steps(step, FLAGS.warmup_steps)
    timers = {side: (lambda k, step=step: timing.time_steps(step, k)) for side, step in steps.items()}
    times = timing.run_rounds(timers, FLAGS.rounds, FLAGS.steps_per_round)
    print(timing.step_table(times, FLAGS.batch_size))
    for clock in ("wall", "cpu"):
        if {"ffl_tf", "bare loop"} <= set(times):
            print(f"{clock}: ffl_tf speed / bare loop speed: "
                  f"{timing.paired_ratio(times['bare loop'], times['ffl_tf'], clock)} (target >= {TARGET})")
        for before, change in (("Keras BN", "fused batch norm"), ("Keras padding", "explicit padding")):
            if {"ffl_tf", before} <= set(times):
                print(f"{clock}: speed with the {change} / speed before it: "
                      f"{timing.paired_ratio(times[before], times['ffl_tf'], clock)}")
    print(timing.cpu_description().rsplit("; ", 1)[-1] + " (at the end)")


if __name__ == "__main__":
    app.run(main)
