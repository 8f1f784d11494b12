"""Times the FFL train step with the backbones' explicit PyTorch padding against Keras "same" padding.

Strided convs (and the ImageNet stem's max-pool) now pad like the PyTorch references: a `ZeroPadding2D`
layer then a "valid" layer, where they used Keras "same" padding, which pads inside the op (see
ffl_tf/models/layers.py). This measures what the extra layers cost in training: the same FFL network is
built twice, once as it is ("explicit") and once under `layers.keras_same_padding()` ("keras same", the
code before the change), with the same weights. Both train on one fixed uint8 batch through their compiled
train function, in alternating rounds in one process, as in benchmarks/train_step.py, whose flags and
timing helpers this script uses (defaults: two resnet32 branches, shared_stages=2, 100 classes, batch 128).

    python -m benchmarks.padding
    python -m benchmarks.padding --rounds=1 --steps_per_round=1 --warmup_steps=1   # a quick check it runs
"""

import contextlib
import os
import statistics
import time
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import app

from benchmarks.common import compile_ffl
from benchmarks.train_step import (  # (importing it also defines the flags used here)
    FLAGS,
    STEPS_PER_EPOCH,
    fixed_batch,
    run_rounds,
    step_function,
    time_steps,
)
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.models import layers

NEW, OLD = "explicit", "keras same"


def build_model(
    backbones: Sequence[str], num_classes: int, image_shape: tuple[int, int, int], shared_stages: int,
    *, keras_same_padding: bool,
) -> keras.Model:
    """The compiled FFL model; with `keras_same_padding`, built as before the explicit padding.

    The only place that builds or compiles a model: update it when their signatures change.
    """
    with layers.keras_same_padding() if keras_same_padding else contextlib.nullcontext():
        model = build_ffl_model(backbones, num_classes, image_shape, shared_stages=shared_stages)
    compile_ffl(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), STEPS_PER_EPOCH)
    return model


def padding_layers(model: keras.Model) -> int:
    """How many ZeroPadding2D layers `model` holds, nested models (trunk, branches, fusion) included."""
    return sum(
        padding_layers(layer) if isinstance(layer, keras.Model) else isinstance(layer, keras.layers.ZeroPadding2D)
        for layer in model.layers
    )


def cpu_model() -> str:
    """The "model name" of the first CPU in /proc/cpuinfo, or "unknown" where there is none."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def summarise(times: dict[str, list]) -> str:
    """Median step of each side per clock, the ratio explicit / keras same, and the per-round ratios.

    The median of the per-round ratios (steps taken seconds apart) is the headline, as in
    benchmarks/train_step.py: it is the estimate that other processes' load moves least.
    """
    lines = []
    for clock, label in (("cpu", "CPU time (all threads)"), ("wall", "wall clock")):
        new_rounds, old_rounds = ([r[clock] for r in times[side]] for side in (NEW, OLD))
        new = statistics.median(t for r in new_rounds for t in r)
        old = statistics.median(t for r in old_rounds for t in r)
        ratios = [statistics.median(n) / statistics.median(o) for n, o in zip(new_rounds, old_rounds)]
        lines.append(
            f"{label}: {NEW} {1e3 * new:.1f} ms, {OLD} {1e3 * old:.1f} ms, ratio new/old "
            f"{statistics.median(ratios):.3f} (median of {len(ratios)} paired rounds; min {min(ratios):.3f}, "
            f"max {max(ratios):.3f}; {new / old:.3f} from the medians)"
        )
    lines.append(f"CPU: {cpu_model()}; load average (1 min) at the end: {os.getloadavg()[0]:.2f} "
                 f"on {os.cpu_count()} CPUs")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Builds both models with the same weights, traces and warms them up, then times alternating rounds."""
    del argv
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(FLAGS.seed)
    image_shape = tuple(int(d) for d in FLAGS.image_shape)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {cpu_model()}, {os.cpu_count()} CPUs; "
          f"backbones={','.join(FLAGS.backbones)} shared_stages={FLAGS.shared_stages} "
          f"batch_size={FLAGS.batch_size} num_classes={FLAGS.num_classes} "
          f"policy={keras.mixed_precision.global_policy().name}", flush=True)
    models = {
        side: build_model(FLAGS.backbones, FLAGS.num_classes, image_shape, FLAGS.shared_stages,
                          keras_same_padding=side == OLD)
        for side in (NEW, OLD)
    }
    models[OLD].set_weights(models[NEW].get_weights())
    print(", ".join(f"{side}: {padding_layers(m)} ZeroPadding2D layers" for side, m in models.items()), flush=True)
    batch = fixed_batch(FLAGS.batch_size, FLAGS.num_classes, image_shape, FLAGS.seed)
    steps = {side: step_function(model, batch) for side, model in models.items()}
    for side, step in steps.items():
        start = time.perf_counter()
        step()
        print(f"{side}: first step (trace + compile) {time.perf_counter() - start:.1f} s", flush=True)
        time_steps(step, FLAGS.warmup_steps)
    print(summarise(run_rounds(steps, FLAGS.rounds, FLAGS.steps_per_round)))


if __name__ == "__main__":
    app.run(main)
