"""ffl_tf's FFL train step against the same step in PyTorch, in float32 and in bfloat16, on this CPU.

The PyTorch side (benchmarks/torch_ffl.py) is written from docs/method.md: two ResNet-32 branches sharing
the stem and stages 1-2, the fusion module, the loss M5 at w(e), Nesterov SGD with weight decay 1e-4 on the
branches and 1e-5 on the fusion module, uint8 images normalised inside the step; batch 128, 100 classes.

Before timing, a float32 correctness check makes the comparison fair (the same network and the same loss):
ffl_tf's freshly built model saves its weights, a batch, its eval-mode logits, its train-mode loss parts,
its L2 penalty and its loss parts after one train step; PyTorch loads those weights and must have the same
trainable parameter count (849,148), the same logits (eval mode) and the same losses (train mode, batch
statistics; and again after one SGD step from the same weights, which checks the optimizer too). The run
stops if they disagree. The PyTorch timing workers then start from the same weights.

Each (side, mode) is its own worker process, started once and kept alive: the Keras policy is global, and
TensorFlow and PyTorch in one process would compete for threads. A worker builds its model, takes one
untimed step (tracing), and then times K steps whenever the parent asks (JSON lines over pipes). Only one
worker runs at a time: after the warm-up, each round asks every worker in turn for `--steps_per_round`
steps, the first worker rotating from round to round, so that ratios pair steps taken seconds apart on a
shared, noisy machine. Both sides use `--intra_op_threads` intra-op and `--inter_op_threads` inter-op
threads (default: all cores, 1). PyTorch's CPU wheel runs its intra-op threads with GNU OpenMP, whose
idle threads spin by default: when other processes share the cores, a spinning or preempted thread makes
every parallel region wait, and the step slows down several-fold, so the PyTorch workers run with
OMP_WAIT_POLICY=PASSIVE (`--omp_wait_policy`; TensorFlow's own thread pool needs no such setting).
PyTorch's tensors are channels_last (`--torch_memory_format`), which ran faster than contiguous NCHW here
in both modes; ffl_tf's are NHWC. Timed: one call of ffl_tf's compiled train function
(`make_train_function()`, what `fit()` runs, fed by an iterator over one fixed batch; it also updates
ffl_tf's accuracy metrics), and one PyTorch eager step (forward, loss, zero_grad, backward, SGD step);
each clock stops after the loss is read as a float. Reported: step time on the wall and CPU clocks,
images/s, the ffl_tf/PyTorch speed ratio per mode and each side's bfloat16/float32 speed-up (median of
the per-round ratios, with their range, and the ratio of the overall medians), the CPU and its bf16-related
ISA flags, versions, thread settings and the load average.

    python -m benchmarks.vs_pytorch                                  # the figures: 10 rounds x 5 steps
    python -m benchmarks.vs_pytorch --rounds=2 --steps_per_round=1 --warmup_steps=1    # a quick try
    python -m benchmarks.vs_pytorch --modes=bfloat16 --sides=pytorch --torch_memory_format=contiguous
    python -m benchmarks.vs_pytorch --intra_op_threads=1     # one thread each: less sensitive to other load

Needs `pip install -r benchmarks/requirements.txt` (PyTorch; ffl_tf itself never imports it).
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import timing
from benchmarks.common import compile_ffl, train_step_fn
from ffl_tf import methods
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.model.distillation import DistillationModel

ROOT = Path(__file__).resolve().parents[1]
TORCH_WORKER = Path(__file__).with_name("torch_ffl.py")
NUM_CLASSES = 100
IMAGE_SHAPE = (32, 32, 3)
STEPS_PER_EPOCH = 391
# 2 x ResNet-32 sharing stem + stages 1-2, plus the fusion module, 100 classes (docs/method.md).
EXPECTED_PARAMS = 849_148
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
SIDES = {"keras": "ffl_tf", "pytorch": "PyTorch"}
# Correctness check bounds. Logits: |ffl_tf - PyTorch| <= 1e-4 (float32 rounding gives ~2e-5 on logits
# of magnitude ~50-80). Losses: <= 1e-4 x max(1, |ffl_tf|). After one SGD step: 2e-3 x max(1, |ffl_tf|),
# because at this random start the float32 gradients are ill-conditioned (either side's differ from a
# float64 computation by up to ~4% of their largest element), which moves the losses after the step by
# ~1e-4-4e-4 relative; a 10% error in the learning rate, Nesterov off, or w = 1 instead of w(0) moves the
# total by 6e-3 to 5e-2.
LOGIT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-4
AFTER_STEP_TOLERANCE = 2e-3
# CPU features that decide which bfloat16 kernels oneDNN can use (absent ones are listed too).
# Wall clock is what training waits for; the process's CPU time (all threads) is less sensitive to load.

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 10, "Alternating rounds; each times every worker in turn.")
flags.DEFINE_integer("steps_per_round", 5, "Timed steps per worker per round.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps per worker after its first (tracing) step.")
flags.DEFINE_integer("batch_size", 128, "Images per train step.")
flags.DEFINE_list("modes", ["float32", "bfloat16"], "Precisions: float32 and/or bfloat16.")
flags.DEFINE_list("sides", ["keras", "pytorch"], "keras (ffl_tf) and/or pytorch.")
flags.DEFINE_integer("intra_op_threads", os.cpu_count(), "Intra-op threads of both frameworks.")
flags.DEFINE_integer("inter_op_threads", 1, "Inter-op threads of both frameworks.")
flags.DEFINE_enum("torch_memory_format", "channels_last", ["channels_last", "contiguous"],
                  "PyTorch's memory format for activations and weights.")
flags.DEFINE_string(
    "omp_wait_policy", "PASSIVE",
    "OMP_WAIT_POLICY of the PyTorch processes (PyTorch's CPU wheel runs its intra-op threads with GNU OpenMP; "
    "TensorFlow uses no OpenMP). PASSIVE: idle threads sleep at once. The library default spins, which can be faster "
    "on an idle machine but several times slower when other processes share the cores. Empty: leave unset.")
flags.DEFINE_bool("check", True, "Check first that both sides compute the same logits and losses.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the batch.")
flags.DEFINE_enum("worker", "", ["", "keras", "keras_reference"], "Internal: run as a worker process.")
flags.DEFINE_enum("mode", "float32", list(POLICIES), "Internal: the worker's precision.")
flags.DEFINE_string("output", "", "Internal: where the keras_reference worker saves its .npz file.")


# ---------------------------------------------------------------------------------------------------------
# The ffl_tf worker
# ---------------------------------------------------------------------------------------------------------


def configure_tensorflow(intra_op_threads: int, inter_op_threads: int) -> None:
    """TensorFlow's thread pools; must run before the first op."""
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)


def build_keras_ffl(mode: str, seed: int) -> DistillationModel:
    """ffl_tf's FFL model (2 x resnet32, shared_stages=2) under `mode`'s policy, compiled with the official recipe."""
    keras.mixed_precision.set_global_policy(POLICIES[mode])
    keras.utils.set_random_seed(seed)
    model = build_ffl_model(["resnet32", "resnet32"], NUM_CLASSES, IMAGE_SHAPE, shared_stages=2)
    compile_ffl(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), STEPS_PER_EPOCH)
    return model


def reply_channel() -> Callable[[dict], None]:
    """A function writing one JSON line to the original standard output, which from now on only it uses
    (file descriptor 1 becomes a copy of standard error, so nothing a library prints corrupts the answers).
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return lambda message: channel.write(json.dumps(message) + "\n")


def keras_worker(mode: str) -> None:
    """Builds ffl_tf's model, takes one untimed step, replies {"ready": info}, then answers each request
    {"steps": K} on standard input with {"wall": [...], "cpu": [...]} until {"quit": true} or end of input.
    """
    reply = reply_channel()
    configure_tensorflow(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    model = build_keras_ffl(mode, FLAGS.seed)
    step = train_step_fn(model, timing.fixed_batch(FLAGS.batch_size, NUM_CLASSES, IMAGE_SHAPE, FLAGS.seed))
    start = time.perf_counter()
    step()
    reply({"ready": {
        "framework": f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        "threads": f"intra_op_parallelism_threads={tf.config.threading.get_intra_op_parallelism_threads()}, "
                   f"inter_op_parallelism_threads={tf.config.threading.get_inter_op_parallelism_threads()}",
        "details": "NHWC, "
                   f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (on by default)')}",
        "first_step_s": time.perf_counter() - start,
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
    }})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        reply(timing.time_steps(step, int(request["steps"])))


def keras_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every variable as "<sub-model>/<layer>/<variable>" (trunk, branch_<k>, fusion; names unique only within one)."""
    return {
        f"{sub_model.name}/{layer.name}/{variable.name}": np.asarray(variable)
        for sub_model in model.layers if isinstance(sub_model, keras.Model)
        for layer in sub_model.layers for variable in layer.weights
    }


def loss_parts(model: DistillationModel, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The FFL loss's parts on a train-mode forward pass, and the total at w = 1 (the KD terms weigh fully)."""
    total, parts = methods.loss_fn("ffl")(model(images, training=True), labels, kd_weight=1.0)
    return {"total_w1": float(total), **{name: float(value) for name, value in parts.items()}}


def write_reference(path: str, batch_size: int, seed: int) -> None:
    """Saves what the correctness check compares: ffl_tf's float32 model's weights, a batch, the eval-mode
    logits, the train-mode loss parts and L2 penalty, and the loss parts after one train step.
    """
    configure_tensorflow(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    model = build_keras_ffl("float32", seed)
    images, labels = timing.fixed_batch(batch_size, NUM_CLASSES, IMAGE_SHAPE, seed)
    arrays = {f"weights/{key}": value for key, value in keras_weights(model).items()}
    arrays.update({f"eval/{name}": np.asarray(z) for name, z in model(images, training=False).items()})
    train = loss_parts(model, images, labels)
    _, parts = model.compute_distillation_loss(model(images, training=False), labels)
    train["l2"] = float(parts["l2"])
    train_step_fn(model, (images, labels))()
    after_step = loss_parts(model, images, labels)
    arrays.update({f"train/{name}": np.float64(value) for name, value in train.items()})
    arrays.update({f"after_step/{name}": np.float64(value) for name, value in after_step.items()})
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    np.savez(path, images=images, labels=labels, num_classes=NUM_CLASSES, trainable_params=trainable, **arrays)


# ---------------------------------------------------------------------------------------------------------
# The parent: workers, check, rounds, report
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    """A timing worker process of one side in one mode, spoken to in JSON lines."""

    side: str
    mode: str
    process: subprocess.Popen
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{SIDES[self.side]} {self.mode}"

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The {self.name} worker exited (code {self.process.wait()}); see its errors above.")
        return json.loads(line)

    def time(self, steps: int) -> dict[str, list[float]]:
        """Seconds per step of `steps` steps, on each clock."""
        self.process.stdin.write(json.dumps({"steps": steps}) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        """Asks the worker to quit and waits for it; kills it if it does not go within a minute."""
        try:
            self.process.stdin.write(json.dumps({"quit": True}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


def common_arguments() -> list[str]:
    return [f"--batch_size={FLAGS.batch_size}", f"--seed={FLAGS.seed}"]


def keras_command(worker: str, mode: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.vs_pytorch", f"--worker={worker}", f"--mode={mode}",
            f"--intra_op_threads={FLAGS.intra_op_threads}", f"--inter_op_threads={FLAGS.inter_op_threads}",
            *common_arguments(), *extra]


def torch_command(command: str, mode: str, *extra: str) -> list[str]:
    # Run by path: importing the `benchmarks` package would import TensorFlow into the PyTorch process.
    return [sys.executable, str(TORCH_WORKER), command, f"--mode={mode}", f"--threads={FLAGS.intra_op_threads}",
            f"--interop_threads={FLAGS.inter_op_threads}", f"--memory_format={FLAGS.torch_memory_format}",
            f"--num_classes={NUM_CLASSES}", *common_arguments(), *extra]


def torch_environment() -> dict[str, str]:
    """The environment of the PyTorch processes: this one's, with `--omp_wait_policy`."""
    env = dict(os.environ)
    if FLAGS.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = FLAGS.omp_wait_policy
    return env


def run_check(reference_file: str) -> None:
    """Runs the correctness check (float32) and prints its differences; exits if the sides disagree."""
    subprocess.run(keras_command("keras_reference", "float32", f"--output={reference_file}"), cwd=ROOT, check=True)
    answer = subprocess.run(torch_command("check", "float32", f"--reference={reference_file}"),
                            cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True, env=torch_environment())
    torch_values = json.loads(answer.stdout)
    reference = np.load(reference_file)
    failures = []

    def compare(label: str, keras_value: float, torch_value: float, difference: float, bound: float) -> None:
        ok = difference <= bound
        failures.extend([] if ok else [label])
        print(f"  {label:<32} ffl_tf {keras_value:>12.6f}  PyTorch {torch_value:>12.6f}  "
              f"|diff| {difference:.2e}  {'ok' if ok else 'FAIL'} (<= {bound:.1e})")

    keras_params, torch_params = int(reference["trainable_params"]), torch_values["trainable_params"]
    print(f"Correctness check (float32, batch {FLAGS.batch_size}): trainable parameters ffl_tf {keras_params:,}, "
          f"PyTorch {torch_params:,} (fusion module {torch_values['fusion_params']:,}), expected {EXPECTED_PARAMS:,}")
    if not keras_params == torch_params == EXPECTED_PARAMS:
        failures.append("trainable parameters")
    for head, difference in torch_values["logits_max_abs_diff"].items():
        largest = float(np.abs(reference[f"eval/{head}"]).max())
        compare(f"eval logits {head}: max |z|", largest, torch_values["logits_max_abs"][head], difference,
                LOGIT_TOLERANCE)
    for stage, tolerance in (("train", LOSS_TOLERANCE), ("after_step", AFTER_STEP_TOLERANCE)):
        for part, torch_value in torch_values[stage].items():
            keras_value = float(reference[f"{stage}/{part}"])
            compare(f"{stage} {part}", keras_value, torch_value, abs(keras_value - torch_value),
                    tolerance * max(1.0, abs(keras_value)))
    if failures:
        raise SystemExit(f"The PyTorch network does not compute what ffl_tf computes: {', '.join(failures)}.")


def start_workers(sides: Sequence[str], modes: Sequence[str], weights: str | None) -> list[Worker]:
    """Starts one worker per (side, mode), all at once, and waits until each has taken its first step."""
    workers = []
    for mode in modes:
        for side in sides:
            if side == "keras":
                command, env = keras_command("keras", mode), None
            else:
                command = torch_command("serve", mode, *([f"--weights={weights}"] if weights else []))
                env = torch_environment()
            process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env=env)
            workers.append(Worker(side, mode, process))
    try:
        for worker in workers:
            worker.info = worker.receive()["ready"]
            print(f"{worker.name}: ready, first step {worker.info['first_step_s']:.1f} s", flush=True)
    except BaseException:
        for worker in workers:
            worker.process.kill()
        raise
    return workers


def report(workers: list[Worker], times: dict[str, list[dict]], batch_size: int) -> str:
    """Per worker: step time on both clocks and images/s; then ffl_tf/PyTorch per mode and bf16/float32 per side."""
    lines = [f"{'worker':<18}{'wall ms/step':>13}{'images/s':>10}{'CPU ms/step':>13}{'CPU/wall':>9}"]
    for worker in workers:
        wall, cpu = timing.median_step(times[worker.name], "wall"), timing.median_step(times[worker.name], "cpu")
        lines.append(f"{worker.name:<18}{1e3 * wall:>13.1f}{batch_size / wall:>10.1f}{1e3 * cpu:>13.1f}"
                     f"{cpu / wall:>9.2f}")
    by_key = {(w.side, w.mode): times[w.name] for w in workers}
    # (label, slower-if-ratio-above-1 side's rounds, the other's): ffl_tf against PyTorch, bf16 against float32.
    pairs = [(f"ffl_tf/PyTorch speed, {mode} (> 1: ffl_tf faster)", by_key["pytorch", mode], by_key["keras", mode])
             for mode in POLICIES if ("keras", mode) in by_key and ("pytorch", mode) in by_key]
    pairs += [(f"{SIDES[side]} bfloat16 speed-up over float32", by_key[side, "float32"], by_key[side, "bfloat16"])
              for side in SIDES if (side, "float32") in by_key and (side, "bfloat16") in by_key]
    for clock, title in (("wall", "wall clock"), ("cpu", "CPU time (the process's, all threads)")):
        if pairs:
            lines.append(f"-- ratios, {title}: median of per-round ratios (range; ratio of the medians)")
        lines += [f"{label}: {timing.paired_ratio(slow, fast, clock)}" for label, slow, fast in pairs]
    return "\n".join(lines)


def describe(workers: list[Worker]) -> str:
    """Versions, threads and settings, one line per framework (from the first worker of each side)."""
    seen, lines = set(), []
    for worker in workers:
        if worker.side not in seen:
            seen.add(worker.side)
            info = worker.info
            lines.append(f"{SIDES[worker.side]}: {info['framework']}; {info['threads']}; {info['details']}; "
                         f"{info['trainable_params']:,} trainable parameters")
    return "\n".join(lines)


def validate_flags() -> None:
    unknown = [m for m in FLAGS.modes if m not in POLICIES] + [s for s in FLAGS.sides if s not in SIDES]
    if unknown or not FLAGS.modes or not FLAGS.sides:
        raise app.UsageError(f"--modes takes {', '.join(POLICIES)}; --sides takes {', '.join(SIDES)} "
                             f"(got unknown {unknown or 'none'}).")


def main(argv: Sequence[str]) -> None:
    """A worker when --worker is set; otherwise the check, the workers, the rounds and the report."""
    del argv
    if FLAGS.worker == "keras":
        return keras_worker(FLAGS.mode)
    if FLAGS.worker == "keras_reference":
        return write_reference(FLAGS.output, FLAGS.batch_size, FLAGS.seed)
    validate_flags()
    print(timing.cpu_description())
    print(f"batch {FLAGS.batch_size}, {NUM_CLASSES} classes, {'x'.join(map(str, IMAGE_SHAPE))}; modes "
          f"{','.join(FLAGS.modes)}; sides {','.join(FLAGS.sides)}; {FLAGS.rounds} rounds x {FLAGS.steps_per_round} "
          f"steps after {FLAGS.warmup_steps} warm-up steps; load average at the start "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("bfloat16: Keras's mixed_bfloat16 policy (float32 variables, classifiers and loss); "
          "torch.autocast('cpu', dtype=torch.bfloat16) around forward and loss, classifiers in float32", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        if FLAGS.check and "pytorch" in FLAGS.sides:
            reference = os.path.join(tmp, "reference.npz")
            run_check(reference)
        workers = start_workers(FLAGS.sides, FLAGS.modes, reference)
    try:
        print(describe(workers))
        for worker in workers:
            worker.time(FLAGS.warmup_steps)
        times = timing.run_rounds({w.name: w.time for w in workers}, FLAGS.rounds, FLAGS.steps_per_round)
    finally:
        for worker in workers:
            worker.close()
    print(report(workers, times, FLAGS.batch_size))
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    app.run(main)
