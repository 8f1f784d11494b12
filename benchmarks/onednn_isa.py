"""Which oneDNN kernels ffl_tf's FFL train step runs on this CPU, in float32 and in mixed_bfloat16, and their time.

For each mode a child process builds ffl_tf's FFL model (2 x resnet32, shared_stages=2, 32x32x3, 100
classes, the official recipe's SGD), takes its first (tracing) step and `--warmup_steps` more, then
`--steps` steps of the compiled train function, all with ONEDNN_VERBOSE=1, so that oneDNN prints one line
per primitive execution with its implementation and its time in ms (the last field). The child marks the
measured steps on standard output; this process reads the lines between the marks and prints, per mode:

- executions per step and share of oneDNN's time by primitive kind (convolution, reorder, inner_product,
  gemm_api, ...), by implementation (e.g. brg_conv_fwd:avx512_core_bf16, jit:uni, x64:gemm:jit) and
  propagation kind, and by ISA (the part of the implementation's name that names one: avx512_core,
  avx512_core_bf16, uni, any, ...);
- reorders (layout and data-type conversions) by conversion, e.g. `bf16:cdba -> bf16:AcdB16a2b`;
- primitives that compute in float32 in bfloat16 mode, and any reference (`ref:`) implementation;
- oneDNN's total time per step against the step's wall time: the rest is TensorFlow's own (Eigen) kernels,
  which this log does not show (with oneDNN on, TensorFlow still runs e.g. batch norm, ReLU, the casts of
  mixed precision and the optimizer's updates itself).

Timings from this log are for the split, not for speed: verbose logging slows every primitive down a
little. Format tags in the conversions: abcd = plain NCHW / OIHW, acdb = NHWC (TensorFlow's activations),
cdba = HWIO (TensorFlow's conv kernels), ab / ba = matrices; upper-case letters are oneDNN's blocked
layouts (AcdB16a2b: blocks of 16 output channels x 2 input channels, the layout of bf16 dot products).

    python -m benchmarks.onednn_isa                      # float32 and bfloat16, 3 measured steps each
    python -m benchmarks.onednn_isa --modes=bfloat16 --keep_logs=/tmp/onednn   # keep the raw logs
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import collections
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks.common import compile_ffl
from ffl_tf.methods.ffl import build_ffl_model

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
NUM_CLASSES = 100
IMAGE_SHAPE = (32, 32, 3)
STEPS_PER_EPOCH = 391
# What the child writes around each measured step (the end mark carries the step's wall time in s).
BEGIN, END = "ffl_tf_onednn_isa step begin", "ffl_tf_onednn_isa step end"
# ISA names oneDNN puts in its implementation names, most specific first.
_ISA = re.compile(r"(avx512_core_amx_fp16|avx512_core_amx|avx512_core_fp16|avx512_core_bf16|avx512_core_vnni|"
                  r"avx512_core|avx2_vnni_2|avx2_vnni|avx2|avx|sse41|uni|any)(?![a-z0-9_])")

FLAGS = flags.FLAGS
flags.DEFINE_list("modes", ["float32", "bfloat16"], "Precisions: float32 and/or bfloat16 (mixed_bfloat16).")
flags.DEFINE_integer("steps", 3, "Measured train steps per mode.")
flags.DEFINE_integer("warmup_steps", 2, "Steps after the first (tracing) one before the measured ones.")
flags.DEFINE_integer("batch_size", 128, "Images per train step.")
flags.DEFINE_integer("intra_op_threads", os.cpu_count(), "TensorFlow's intra-op threads (oneDNN's too).")
flags.DEFINE_integer("inter_op_threads", 1, "TensorFlow's inter-op threads.")
flags.DEFINE_integer("top", 12, "Rows per table (the rest are summed in one row).")
flags.DEFINE_string("keep_logs", "", "Keep each mode's raw verbose log here (default: discard it).")
flags.DEFINE_enum("child", "", ["", *POLICIES], "Internal: run the steps of this mode with markers.")


# ---------------------------------------------------------------------------------------------------------
# The child: ffl_tf's train steps, marked
# ---------------------------------------------------------------------------------------------------------


def train_function(mode: str, batch_size: int) -> Callable[[], float]:
    """ffl_tf's FFL model under `mode`'s policy: one call of its compiled train function on a fixed batch."""
    keras.mixed_precision.set_global_policy(POLICIES[mode])
    keras.utils.set_random_seed(0)
    model = build_ffl_model(["resnet32", "resnet32"], NUM_CLASSES, IMAGE_SHAPE, shared_stages=2)
    compile_ffl(model, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), STEPS_PER_EPOCH)
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, size=(batch_size, *IMAGE_SHAPE), dtype=np.uint8),
             rng.integers(0, NUM_CLASSES, size=(batch_size,), dtype=np.int64))
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    return lambda: float(model.train_function(iterator)["loss"])


def run_child(mode: str) -> None:
    """Takes the untimed steps, then the measured ones between marks written straight to file descriptor 1
    (oneDNN writes its lines there too, each flushed, so the marks fall between the right lines).
    """
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    step = train_function(mode, FLAGS.batch_size)
    for _ in range(1 + FLAGS.warmup_steps):
        step()
    sys.stdout.flush()
    for _ in range(FLAGS.steps):
        os.write(1, f"{BEGIN}\n".encode())
        start = time.perf_counter()
        step()
        os.write(1, f"{END} {time.perf_counter() - start:.6f}\n".encode())


# ---------------------------------------------------------------------------------------------------------
# Parsing oneDNN's verbose lines
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Execution:
    """One primitive execution: `onednn_verbose[,v1][,timestamp],primitive,exec,cpu,<kind>,<impl>,<prop>,
    <memory descriptors>,<attributes>,<auxiliary>,<problem>,<time ms>`."""

    kind: str
    impl: str
    prop: str
    data_types: dict[str, str]  # argument (src, wei, dst, bia, ...) -> data type (f32, bf16, ...)
    tags: dict[str, str]  # argument -> format tag (acdb, AcdB16a2b, ...)
    problem: str
    ms: float

    @property
    def isa(self) -> str:
        match = _ISA.search(self.impl)
        return match[1] if match else "(none named)"

    @property
    def reference(self) -> bool:
        return self.impl.startswith("ref") or ":ref" in self.impl or "ref:" in self.impl

    @property
    def computes_in_float32(self) -> bool:
        return self.kind != "reorder" and "f32" in (self.data_types.get("src"), self.data_types.get("wei"))

    @property
    def conversion(self) -> str:
        """For a reorder: `src type:tag -> dst type:tag`."""
        return (f"{self.data_types.get('src')}:{self.tags.get('src')} -> "
                f"{self.data_types.get('dst')}:{self.tags.get('dst')}")


def parse_memory_descriptor(token: str) -> tuple[str, str, str]:
    """(argument, data type, format tag) of one descriptor.

    oneDNN 3 writes `src:bf16::blocked:acdb::f0` (argument:type:properties:kind:tag:strides:flags); the
    older form, still used by gemm_api lines, is `src_f32::blocked:ab:f0`.
    """
    parts = token.split(":")
    if len(parts) > 4 and parts[1]:
        return parts[0], parts[1], parts[4]
    argument, _, data_type = parts[0].rpartition("_")
    return argument, data_type, parts[3] if len(parts) > 3 else ""


def parse_execution(line: str) -> Execution | None:
    """The execution a verbose line reports, or None for any other line."""
    fields = line.rstrip("\n").split(",")
    if fields[0] not in ("onednn_verbose", "dnnl_verbose") or "exec" not in fields:
        return None
    i = fields.index("exec")
    if len(fields) < i + 10:
        return None
    descriptors = [parse_memory_descriptor(token) for token in fields[i + 5].split()]
    try:
        ms = float(fields[-1])
    except ValueError:
        return None
    return Execution(
        kind=fields[i + 2], impl=fields[i + 3] or f"({fields[i + 2]})", prop=fields[i + 4],
        data_types={arg: dt for arg, dt, _ in descriptors}, tags={arg: tag for arg, _, tag in descriptors},
        problem=fields[-2], ms=ms,
    )


@dataclasses.dataclass
class ModeLog:
    """What one mode's log holds: the measured steps' executions, their wall times and oneDNN's info lines."""

    executions: list[Execution]
    step_seconds: list[float]
    info: list[str]


def parse_log(lines: Iterable[str]) -> ModeLog:
    """Keeps the executions between the child's begin and end marks, and oneDNN's `info` lines."""
    executions, seconds, info, inside = [], [], [], False
    for line in lines:
        if line.startswith(BEGIN):
            inside = True
        elif line.startswith(END):
            inside = False
            seconds.append(float(line.split()[-1]))
        elif inside and (execution := parse_execution(line)):
            executions.append(execution)
        elif ",info," in line and line.split(",info,", 1)[1].startswith(("oneDNN", "cpu,")):
            info.append(line.strip().split(",info,", 1)[1])
    return ModeLog(executions, seconds, info)


# ---------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------


def table(title: str, executions: Sequence[Execution], key: Callable[[Execution], str], steps: int,
          total_ms: float, top: int) -> str:
    """Executions per step and share of oneDNN's time, grouped by `key`, largest time first."""
    counts, times = collections.Counter(), collections.Counter()
    for execution in executions:
        counts[key(execution)] += 1
        times[key(execution)] += execution.ms
    rows = sorted(counts, key=lambda k: -times[k])
    if len(rows) > top:
        rest = rows[top - 1:]
        counts[f"({len(rest)} others)"] = sum(counts[k] for k in rest)
        times[f"({len(rest)} others)"] = sum(times[k] for k in rest)
        rows = [*rows[:top - 1], f"({len(rest)} others)"]
    width = max([len(title), *(len(r) for r in rows)]) + 2
    lines = [f"{title:<{width}}{'execs/step':>11}{'time share':>12}"]
    lines += [f"{row:<{width}}{counts[row] / steps:>11.1f}{100 * times[row] / total_ms:>11.1f}%" for row in rows]
    return "\n".join(lines)


def summarise(mode: str, log: ModeLog, top: int) -> str:
    """The report of one mode."""
    steps = len(log.step_seconds)
    executions = log.executions
    if not steps or not executions:
        return f"== {mode}: no oneDNN executions logged (is oneDNN on? TF_ENABLE_ONEDNN_OPTS=0 turns it off)."
    total_ms = sum(e.ms for e in executions)
    wall_ms = 1e3 * sum(log.step_seconds)
    sections = [
        f"== {mode} ({POLICIES[mode]}): {steps} steps, {len(executions) / steps:.1f} oneDNN executions per step; "
        f"oneDNN primitives {total_ms / steps:.1f} ms of the {wall_ms / steps:.1f} ms step "
        f"({100 * total_ms / wall_ms:.0f}%; the rest: TensorFlow's own kernels and overhead)",
        "oneDNN: " + "; ".join(log.info),
        table("by kind", executions, lambda e: e.kind, steps, total_ms, top),
        table("by implementation (kind, impl, propagation)", executions,
              lambda e: f"{e.kind} {e.impl} {e.prop}", steps, total_ms, top),
        table("by ISA", executions, lambda e: e.isa, steps, total_ms, top),
        table("reorders by conversion", [e for e in executions if e.kind == "reorder"],
              lambda e: e.conversion, steps, total_ms, top),
    ]
    fallbacks = [e for e in executions if e.reference or (mode == "bfloat16" and e.computes_in_float32)]
    title = "reference implementations" + (" and float32 compute in bfloat16 mode" if mode == "bfloat16" else "")
    sections.append(
        table(f"{title} (kind impl propagation problem)", fallbacks,
              lambda e: f"{e.kind} {e.impl} {e.prop} {e.problem}", steps, total_ms, top)
        if fallbacks else f"{title}: none"
    )
    return "\n\n".join(sections)


def run_mode(mode: str, keep_logs: str) -> ModeLog:
    """Runs the child for `mode` with ONEDNN_VERBOSE=1 and parses its log (kept in `keep_logs` if given)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    command = [sys.executable, "-m", "benchmarks.onednn_isa", f"--child={mode}", f"--steps={FLAGS.steps}",
               f"--warmup_steps={FLAGS.warmup_steps}", f"--batch_size={FLAGS.batch_size}",
               f"--intra_op_threads={FLAGS.intra_op_threads}", f"--inter_op_threads={FLAGS.inter_op_threads}"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(keep_logs or tmp) / f"onednn_verbose_{mode}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            subprocess.run(command, cwd=ROOT, env=env, stdout=out, check=True)
        with path.open() as lines:
            return parse_log(lines)


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.child:
        return run_child(FLAGS.child)
    unknown = [m for m in FLAGS.modes if m not in POLICIES]
    if unknown:
        raise app.UsageError(f"Unknown modes {unknown}; choose from {', '.join(POLICIES)}.")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; FFL 2 x resnet32, batch {FLAGS.batch_size}; "
          f"{FLAGS.steps} measured steps per mode after {1 + FLAGS.warmup_steps} untimed; intra-op threads "
          f"{FLAGS.intra_op_threads}, inter-op {FLAGS.inter_op_threads}", flush=True)
    for mode in FLAGS.modes:
        print(summarise(mode, run_mode(mode, FLAGS.keep_logs), FLAGS.top), end="\n\n", flush=True)


if __name__ == "__main__":
    app.run(main)
