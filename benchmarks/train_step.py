"""Times one FFL train step against one step of the same branches trained with cross-entropy alone.

Both networks share the same input, normalisation, trunk and branches (built by `build_branches`); the
baseline drops what FFL adds: the fusion module, the fused cross-entropy, the KD terms, the ensemble
output and their metrics. Both train on one fixed uint8 batch through their compiled train function
(`make_train_function()` fed by an iterator over that batch, the same path as `fit()`), so the per-call
overhead is the same one `tf.function` call for both. Rounds of each side alternate in one process,
because the machines are noisy and only a ratio measured side by side means anything.

    python -m benchmarks.train_step                      # two resnet32 branches, batch 128
    python -m benchmarks.train_step --backbones=resnet20,resnet20,resnet20
"""

import os
import statistics
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks.common import compile_ffl
from ffl_tf import losses
from ffl_tf.branches import build_branches
from ffl_tf.methods.ffl import build_ffl_model

TARGET_RATIO = 1.10
STEPS_PER_EPOCH = 391
# Wall clock is what training waits for; the process's CPU time is less sensitive to other processes.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["resnet32", "resnet32"], "One backbone per branch.")
flags.DEFINE_integer("shared_stages", 2, "Stages (with the stem) shared by the branches.")
flags.DEFINE_integer("batch_size", 128, "Images per train step.")
flags.DEFINE_integer("num_classes", 100, "Classes of the classifiers.")
flags.DEFINE_list("image_shape", ["32", "32", "3"], "Height, width, channels of the input images.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps per side after tracing.")
flags.DEFINE_integer("rounds", 10, "Alternating rounds (FFL, then branches alone) to time.")
flags.DEFINE_integer(
    "steps_per_round", 5, "Timed steps per side per round; short rounds pair the sides under the same load."
)
flags.DEFINE_bool("mixed_precision", False, "Train both under the mixed_float16 policy.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the batch.")


class BranchesOnlyModel(keras.Model):
    """The FFL branches without fusion module or distillation: L = sum_k CE(z_k) + L2 weight decay.

    Its train step mirrors `FFLModel.train_step` (replica scaling, loss scaling, metrics weighted by the
    batch size) so that the timing difference is only what FFL adds.
    """

    def compile(self, optimizer, *, weight_decay: float = 1e-4, **kwargs) -> None:
        """`weight_decay` is the L2 coefficient on every trainable weight, as for FFL's branches."""
        super().compile(optimizer=optimizer, **kwargs)
        self.weight_decay = weight_decay
        self.loss_metrics = {name: keras.metrics.Mean(name=name) for name in ("loss", "ce_branches", "l2")}
        self.accuracy_metrics = {
            name: keras.metrics.SparseCategoricalAccuracy(name=f"acc_{name}") for name in self.output_names
        }

    @property
    def metrics(self) -> list:
        return [*self.loss_metrics.values(), *self.accuracy_metrics.values()]

    def train_step(self, data) -> dict:
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            heads = self(images, training=True)
            parts = {
                "ce_branches": sum(losses.cross_entropy(z, labels) for z in heads.values()),
                "l2": losses.l2_penalty(self.trainable_variables, self.weight_decay),
            }
            loss = parts["ce_branches"] + parts["l2"]
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        batch = keras.ops.shape(labels)[0]
        for name, value in {"loss": loss, **parts}.items():
            self.loss_metrics[name].update_state(value, sample_weight=batch)
        for name, metric in self.accuracy_metrics.items():
            metric.update_state(labels, heads[name])
        return {m.name: m.result() for m in self.metrics}


def build_branches_only(
    backbones: Sequence[str], num_classes: int, image_shape: tuple[int, int, int], *, shared_stages: int
) -> BranchesOnlyModel:
    """The network `build_ffl_model` builds with the same arguments, minus fusion module and ensemble."""
    images = keras.Input(image_shape, dtype="uint8", name="images")
    x = keras.layers.Normalization(mean=[0.0], variance=[255.0**2], name="normalize")(images)
    _, branches = build_branches(images, x, backbones, num_classes=num_classes, shared_stages=shared_stages)
    outputs = {f"branch_{k}": b["logits"] for k, b in enumerate(branches)}
    return BranchesOnlyModel(images, outputs, name="branches_only")


def sgd() -> keras.optimizers.Optimizer:
    """The official recipe's optimizer: SGD 0.1, Nesterov momentum 0.9; each model gets its own."""
    return keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)


def build_models(
    backbones: Sequence[str], num_classes: int, image_shape: tuple[int, int, int], shared_stages: int
) -> dict[str, keras.Model]:
    """Both compiled models: `FFL` and `branches alone`."""
    ffl = build_ffl_model(backbones, num_classes, image_shape, shared_stages=shared_stages)
    compile_ffl(ffl, sgd(), STEPS_PER_EPOCH)
    baseline = build_branches_only(backbones, num_classes, image_shape, shared_stages=shared_stages)
    baseline.compile(sgd())
    return {"FFL": ffl, "branches alone": baseline}


def fixed_batch(batch_size: int, num_classes: int, image_shape: tuple[int, int, int], seed: int) -> tuple:
    """One random batch of uint8 images and integer labels, reused for every step of both sides."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, *image_shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=(batch_size,), dtype=np.int64)
    return images, labels


def step_function(model: keras.Model, batch: tuple) -> Callable[[], float]:
    """One call of the model's compiled train function on `batch`; returns the loss as a Python float.

    Reading the float waits for the step to finish, so a clock around the call times the whole step.
    """
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    train_function = model.train_function

    def step() -> float:
        return float(train_function(iterator)["loss"])

    return step


def time_steps(step: Callable[[], float], steps: int) -> dict[str, list[float]]:
    """Seconds of each of `steps` consecutive calls of `step`, on each clock of `CLOCKS`."""
    times: dict[str, list[float]] = {clock: [] for clock in CLOCKS}
    for _ in range(steps):
        start = {clock: read() for clock, read in CLOCKS.items()}
        step()
        for clock, read in CLOCKS.items():
            times[clock].append(read() - start[clock])
    return times


def run_rounds(steps: dict[str, Callable[[], float]], rounds: int, steps_per_round: int) -> dict[str, list]:
    """Alternates `steps_per_round` steps of each side, `rounds` times.

    Returns {side: [one `time_steps` result per round]}.
    """
    times: dict[str, list] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            times[name].append(time_steps(step, steps_per_round))
        print(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{name} {1e3 * statistics.median(t[-1]['wall']):.1f} ms" for name, t in times.items()),
            flush=True,
        )
    return times


def compare(times: dict[str, list], clock: str) -> dict:
    """Median step time of each side on `clock`, their ratio, and the ratio of each round's medians.

    The per-round ratios compare steps taken seconds apart, so their median resists load that other
    processes put on the machine for part of the run; a wide min..max says the run was disturbed.
    """
    ffl_rounds = [r[clock] for r in times["FFL"]]
    base_rounds = [r[clock] for r in times["branches alone"]]
    ffl = [t for r in ffl_rounds for t in r]
    base = [t for r in base_rounds for t in r]
    return {
        "ffl": statistics.median(ffl),
        "base": statistics.median(base),
        "ratio": statistics.median(ffl) / statistics.median(base),
        "rounds": [statistics.median(f) / statistics.median(b) for f, b in zip(ffl_rounds, base_rounds)],
    }


def summarise(times: dict[str, list], batch_size: int) -> str:
    """The report: both clocks, images/s, the machine's load, and the summary line (wall clock).

    The summary's ratio is the median of the per-round ratios, the estimate least moved by other
    processes (see benchmarks/README.md); the ratio of the two medians is printed next to it.
    """
    results = {clock: compare(times, clock) for clock in CLOCKS}
    lines = []
    for clock, label in (("cpu", "CPU time (all threads)"), ("wall", "wall clock")):
        c = results[clock]
        lines.append(
            f"{label}: FFL {1e3 * c['ffl']:.1f} ms, branches alone {1e3 * c['base']:.1f} ms, "
            f"ratio {c['ratio']:.3f}; per-round ratio median {statistics.median(c['rounds']):.3f}, "
            f"min {min(c['rounds']):.3f}, max {max(c['rounds']):.3f}"
        )
    wall = results["wall"]
    lines += [
        f"images/s: FFL {batch_size / wall['ffl']:.1f}, branches alone {batch_size / wall['base']:.1f}",
        f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        f"FFL step {1e3 * wall['ffl']:.1f} ms, branches alone {1e3 * wall['base']:.1f} ms, "
        f"ratio {statistics.median(wall['rounds']):.3f} (median of {len(wall['rounds'])} paired rounds; "
        f"{wall['ratio']:.3f} from the medians; target <= {TARGET_RATIO:.2f})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Builds both models, traces and warms them up, then times alternating rounds and prints the report."""
    del argv
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(FLAGS.seed)
    image_shape = tuple(int(d) for d in FLAGS.image_shape)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; "
        f"backbones={','.join(FLAGS.backbones)} shared_stages={FLAGS.shared_stages} "
        f"batch_size={FLAGS.batch_size} num_classes={FLAGS.num_classes} "
        f"policy={keras.mixed_precision.global_policy().name}",
        flush=True,
    )
    models = build_models(FLAGS.backbones, FLAGS.num_classes, image_shape, FLAGS.shared_stages)
    batch = fixed_batch(FLAGS.batch_size, FLAGS.num_classes, image_shape, FLAGS.seed)
    steps = {name: step_function(model, batch) for name, model in models.items()}
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        print(f"{name}: first step (trace + compile) {time.perf_counter() - start:.1f} s", flush=True)
        time_steps(step, FLAGS.warmup_steps)
    print(summarise(run_rounds(steps, FLAGS.rounds, FLAGS.steps_per_round), FLAGS.batch_size))


if __name__ == "__main__":
    app.run(main)
