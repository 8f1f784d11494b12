"""Side-by-side timing, shared by every benchmark: steps on two clocks, alternating rounds, paired ratios.

Framework-free (NumPy and the standard library), so that the PyTorch worker (benchmarks/torch_ffl.py,
run by path) imports it as `timing` without loading TensorFlow, and the TensorFlow side as
`benchmarks.timing`. The machines are small and shared: absolute times move from minute to minute, so
every figure is a ratio of steps taken seconds apart, in rounds that alternate the sides.
"""

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Wall clock is what training waits for; the process's CPU time (all threads) moves less with other load.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
# CPU features that decide which bfloat16 kernels oneDNN can use (absent ones are listed too).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "avx_vnni")

StepTimes = dict[str, list[float]]  # {clock: seconds of each step}


def fixed_batch(batch_size: int, num_classes: int, image_shape=(32, 32, 3), seed: int = 0) -> tuple:
    """One batch of random uint8 images and int64 labels; the same for the same arguments on every side."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, *image_shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=(batch_size,), dtype=np.int64)
    return images, labels


def time_steps(step: Callable[[], object], steps: int) -> StepTimes:
    """Seconds of each of `steps` consecutive calls of `step`, on each clock of `CLOCKS`.

    `step` must return only once the work is done (e.g. by reading the loss as a float).
    """
    times: StepTimes = {clock: [] for clock in CLOCKS}
    for _ in range(steps):
        start = {clock: read() for clock, read in CLOCKS.items()}
        step()
        for clock, read in CLOCKS.items():
            times[clock].append(read() - start[clock])
    return times


def run_rounds(timers: dict[str, Callable[[int], StepTimes]], rounds: int, steps_per_round: int) -> dict[str, list]:
    """{side: [its StepTimes in each round]}; each round times every side in turn, the first one rotating.

    `timers[side](k)` times k steps of that side (in this process, or by asking a worker process).
    """
    names = list(timers)
    times: dict[str, list[StepTimes]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timers[name](steps_per_round))
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {1e3 * statistics.median(t[-1]['wall']):.0f} ms" for name, t in times.items()), flush=True)
    return times


def median_step(rounds: list[StepTimes], clock: str) -> float:
    """The median seconds per step over every step of every round."""
    return statistics.median(t for r in rounds for t in r[clock])


def per_round_ratios(slow: list[StepTimes], fast: list[StepTimes], clock: str) -> list[float]:
    """How many times faster `fast` was than `slow` in each round (ratio of the rounds' median steps)."""
    return [statistics.median(s[clock]) / statistics.median(f[clock]) for s, f in zip(slow, fast)]


def paired_ratio(slow: list[StepTimes], fast: list[StepTimes], clock: str) -> str:
    """How many times faster `fast` is than `slow`: median of the per-round ratios (min-max), and the ratio of medians.

    Per-round ratios compare steps taken seconds apart, so their median resists the load other processes
    put on the machine for part of the run; a wide min-max says the run was disturbed.
    """
    ratios = per_round_ratios(slow, fast, clock)
    return (f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}; "
            f"{median_step(slow, clock) / median_step(fast, clock):.3f})")


def step_table(times: dict[str, list[StepTimes]], batch_size: int) -> str:
    """Per side: median ms per step on both clocks, images/s and CPU/wall."""
    lines = [f"{'side':<24}{'wall ms/step':>13}{'images/s':>10}{'CPU ms/step':>13}{'CPU/wall':>9}"]
    for name, rounds in times.items():
        wall, cpu = median_step(rounds, "wall"), median_step(rounds, "cpu")
        lines.append(f"{name:<24}{1e3 * wall:>13.1f}{batch_size / wall:>10.1f}{1e3 * cpu:>13.1f}{cpu / wall:>9.2f}")
    return "\n".join(lines)


def cpu_description() -> str:
    """The CPU's model name, family and model numbers (a hypervisor may show a bare name), which of
    `ISA_FLAGS` it has (from the first processor of /proc/cpuinfo), and the load average."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    present = set(fields.get("flags", "").split())
    flags_text = ", ".join(f"{flag} {'yes' if flag in present else 'no'}" for flag in ISA_FLAGS)
    return (f"CPU: {fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model "
            f"{fields.get('model', '?')}), {os.cpu_count()} CPUs; {flags_text}; load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
