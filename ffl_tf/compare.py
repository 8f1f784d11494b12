"""Compares training methods over seeds: each (method, seed) is an ordinary `ffl_tf.train` run, then a report.

    python -m ffl_tf.compare --flagfile=configs/compare_cifar10_sample.flags \\
        --methods=vanilla,dml,one,ffl --seeds=0,1,2 --model_dir=runs/compare

ROOT/<method>/seed<s>/ is the run of `python -m ffl_tf.train` with the comparison's training flags plus
--method, --seed and --model_dir; its output is appended to train.log there. The runs go seed by seed (every
method with seed 0 first), one at a time, then ROOT/report.md, report.json, report.csv and accuracy.png
summarise them (`ffl_tf.report`).

Every other flag is a training flag (ffl_tf/train_flags.py), checked for each method as the training CLI checks
it, before any work. Settings of a method's own come from its DEFAULTS (ffl_tf/methods/<method>.py):
--temperature, --nesterov and --distill_to_* are refused, and --shared_stages and --rampup_epochs apply to the
methods that share a trunk and ramp up (ffl, one) while dml and vanilla keep 0.

Rerunning the command continues: a finished run (results.json written after the checkpoint of its last epoch)
is skipped, an interrupted one resumes from its checkpoint; a run directory written with other settings is
refused. A failing run stops the comparison with the run's name and log; with --keep_going the other runs
still train and the comparison fails at the end. SIGTERM or Ctrl-C stop the current run at its next step with
a checkpoint and exit with status 75. --dry_run prints the commands of the runs left, one per line, to run
elsewhere (a cluster scheduler); --report_only then writes the report from the finished runs.
"""

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import app, flags

from ffl_tf import checkpoint, methods, preemption, report, run_dir, train_flags

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(train_flags)  # --help lists them
flags.DEFINE_list("methods", ["vanilla", "dml", "one", "ffl"], f"Methods to compare: {', '.join(methods.METHODS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one run of each method per seed.")
flags.DEFINE_bool("dry_run", False, "Print the training commands of the runs left (one per line) instead of running.")
flags.DEFINE_bool("report_only", False, "Write the report from the finished runs; train nothing.")
flags.DEFINE_bool("keep_going", False, "After a failed run, train the others; the comparison still fails at the end.")

LOG = "train.log"
# Settings a comparison takes from each method's DEFAULTS; those in _PER_METHOD apply to the methods whose
# default is not 0 (trunk sharing and ramp-up: ffl, one), the others keep their 0.
_PER_METHOD = ("shared_stages", "rampup_epochs")
_REFUSED = sorted({name for m in methods.METHODS.values() for name in m.DEFAULTS} - set(_PER_METHOD))
# Flags that change how a run executes, not what it computes: a finished run is reused whatever they were.
_EXECUTION = {"model_dir", "verbose", "download", "strategy", "jit_compile", "eval_batch_size", "checkpoint_every",
              "checkpoint_every_steps", "keep_checkpoints"}


@dataclasses.dataclass
class Run:
    """One training run of the comparison: its directory and the `ffl_tf.train` command that trains it."""

    method: str
    seed: int
    path: str
    command: list[str]

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"


def _training_flags() -> list:
    return FLAGS.get_key_flags_for_module(train_flags)


@contextlib.contextmanager
def _flag_values(**values):
    """Sets training flags together, runs every flag validator (as `ffl_tf.train` would), restores them after."""
    saved = {name: FLAGS[name].value for name in values}
    try:
        for name, value in values.items():
            FLAGS[name].value = value
        FLAGS.validate_all_flags()
        yield
    finally:
        for name, value in saved.items():
            FLAGS[name].value = value


def run_values(method: str, seed: int, root: str) -> dict:
    """The flags a run sets on top of the comparison's: method, seed, run directory, and a method's own 0s."""
    defaults = methods.get(method).DEFAULTS
    zeros = {name: defaults[name] for name in _PER_METHOD if FLAGS[name].present and not defaults[name]}
    return {"method": method, "seed": seed, "model_dir": os.path.join(root, method, f"seed{seed}"), **zeros}


def make_run(method: str, seed: int, root: str) -> Run:
    """The run and its command; raises ValueError if the training flags are invalid for this method."""
    values = run_values(method, seed, root)
    try:
        with _flag_values(**values):
            passed = [f.serialize() for f in _training_flags() if f.present and f.name not in values]
            command = [sys.executable, "-m", "ffl_tf.train", *passed, *(FLAGS[n].serialize() for n in values)]
            _check_existing(values["model_dir"])
    except flags.IllegalFlagValueError as error:
        raise ValueError(f"--methods={method}: {error}") from None
    return Run(method, seed, values["model_dir"], command)


def _check_existing(path: str) -> None:
    """Refuses a run directory whose flags.txt differs from this run's flags (besides how it executes)."""
    flags_file = os.path.join(path, run_dir.FLAGS_FILE)
    if not os.path.isfile(flags_file):
        return
    with open(flags_file) as f:
        previous = {_flag_name(line): line for line in f.read().splitlines() if line.startswith("--")}
    expected = {f.name: f.serialize() for f in _training_flags() if f.value is not None}
    changed = [f"{previous.get(name, '(unset)')} -> {expected.get(name, '(unset)')}"
               for name in sorted(set(previous) | set(expected))
               if name not in _EXECUTION and previous.get(name) != expected.get(name)]
    if changed:
        raise ValueError(f"{path} holds a run with other settings ({'; '.join(changed)}). Use a new --model_dir, or "
                         "delete that run directory to train it again.")


def _flag_name(line: str) -> str:
    name = line[2:].split("=", 1)[0]
    return name[2:] if name.startswith("no") and name not in FLAGS and name[2:] in FLAGS else name


def plan() -> list[Run]:
    """Every run of the comparison, seed by seed; raises ValueError, naming the fix, before any work."""
    root = FLAGS.model_dir
    if not root:
        raise ValueError("--model_dir=ROOT is required: the comparison's directory, ROOT/<method>/seed<s> per run.")
    if os.path.isfile(os.path.join(root, run_dir.CONFIG)):
        raise ValueError(f"--model_dir={root} is a training run; give the comparison a directory of its own.")
    if not FLAGS.methods or len(set(FLAGS.methods)) < len(FLAGS.methods):
        raise ValueError(f"--methods={','.join(FLAGS.methods)}: list each method once, e.g. vanilla,dml,one,ffl.")
    for method in FLAGS.methods:
        try:
            methods.get(method)
        except ValueError as error:
            raise ValueError(f"--methods: {error}") from None
    if not FLAGS.seeds or not all(s.isdigit() for s in FLAGS.seeds) or len(set(FLAGS.seeds)) < len(FLAGS.seeds):
        raise ValueError(f"--seeds={','.join(FLAGS.seeds)}: use distinct non-negative integers, e.g. 0,1,2.")
    for name, instead in [("method", "--methods"), ("seed", "--seeds")]:
        if FLAGS[name].present:
            raise ValueError(f"--{name} is set by the comparison for each run; use {instead}.")
    refused = [f"--{name}" for name in _REFUSED if FLAGS[name].present]
    if refused:
        raise ValueError(f"{', '.join(refused)}: a comparison trains each method with its own defaults "
                         "(ffl_tf/methods/<method>.py, DEFAULTS); remove them, or train a variant with ffl_tf.train.")
    return [make_run(method, int(seed), root) for seed in FLAGS.seeds for method in FLAGS.methods]


def is_finished(path: str) -> bool:
    """Whether the run wrote results.json after the checkpoint of its last epoch (rerunning it would only evaluate)."""
    try:
        epochs = run_dir.read_results(path)["epochs"]
    except (OSError, ValueError, KeyError):
        return False
    latest = checkpoint.latest(os.path.join(path, run_dir.CHECKPOINTS))
    return latest is not None and latest[0] == (epochs, 0)


class _Signals:
    """SIGTERM/SIGINT: passed on to the running training process as SIGTERM, which stops it with a checkpoint."""

    def __init__(self):
        self.received = False
        self.child: subprocess.Popen | None = None

    def handle(self, signum, frame) -> None:
        self.received = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def train(run: Run, signals: _Signals) -> int:
    """Runs (or resumes) one training run, its output appended to its train.log; returns its exit status."""
    os.makedirs(run.path, exist_ok=True)
    with open(os.path.join(run.path, LOG), "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command)}\n")
        log.flush()
        signals.child = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT)
        try:
            return signals.child.wait()
        finally:
            signals.child = None


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "(empty log)"


def run_all(runs: list[Run]) -> list[str]:
    """Trains the runs not finished yet, printing a line as each starts and ends; returns the failures' messages.

    Exits with status 75 after a stop request, and with a one-line message at the first failure unless
    --keep_going.
    """
    signals = _Signals()
    previous = {sig: signal.signal(sig, signals.handle) for sig in preemption.SIGNALS}
    failures = []
    try:
        for index, run in enumerate(runs, 1):
            if signals.received:
                break
            prefix = f"[{index}/{len(runs)}] {run.name}:"
            if is_finished(run.path):
                print(f"{prefix} finished earlier, skipped", flush=True)
                continue
            log = os.path.join(run.path, LOG)
            print(f"{prefix} started, log {log}", flush=True)
            start = time.monotonic()
            status = train(run, signals)
            elapsed = _duration(time.monotonic() - start)
            if status == 0 and is_finished(run.path):
                print(f"{prefix} finished in {elapsed} ({_headline(run)})", flush=True)
            elif signals.received or status == preemption.EXIT_STATUS:
                signals.received = True
                print(f"{prefix} stopped on request after {elapsed}; its log says where it resumes", flush=True)
            else:
                print(f"{prefix} failed (exit status {status}) after {elapsed}", flush=True)
                failures.append(f"{run.name} failed: {_last_line(log)} (log: {log})")
                if not FLAGS.keep_going:
                    sys.exit(f"ffl_tf.compare: error: {failures[-1]}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signals.received:
        print("ffl_tf.compare: stopped on request; rerun the same command to continue.", file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    return failures


def _headline(run: Run) -> str:
    head = report.HEADLINE_HEADS[run.method]
    return f"{head} {100 * run_dir.read_results(run.path)['accuracy'][head]:.2f}%"


def write_report(runs: list[Run]) -> None:
    finished: dict[str, dict[int, str]] = {method: {} for method in FLAGS.methods}
    for run in runs:
        if is_finished(run.path):
            finished[run.method][run.seed] = run.path
    missing = [f"{run.method}/seed{run.seed}" for run in runs if run.seed not in finished[run.method]]
    summary = report.write(FLAGS.model_dir, finished, missing)
    print(f"\n{report.table(summary)}\n\nReport: {os.path.join(FLAGS.model_dir, report.MARKDOWN)} (and "
          f"{report.JSON}, {report.CSV}, {report.PLOT} beside it)")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, whose training-flag checks see one --method: the first of --methods that takes every flag
    as given (not a dml or vanilla, which the comparison gives their own 0s). plan() checks every method."""
    scratch = flags.FlagValues()
    flags.DEFINE_list("methods", FLAGS["methods"].default, "", flag_values=scratch)
    with contextlib.suppress(flags.Error):  # the real parse below reports it
        scratch(argv, known_only=True)
        requested = [m for m in scratch.methods if m in methods.METHODS]
        as_given = [m for m in requested if all(methods.get(m).DEFAULTS[name] for name in _PER_METHOD)]
        if requested:
            FLAGS.set_default("method", (as_given or requested)[0])
    return app.parse_flags_with_usage(argv)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        runs = plan()
    except ValueError as error:
        sys.exit(f"ffl_tf.compare: error: {error}")
    if FLAGS.dry_run:
        for run in runs:
            if is_finished(run.path):
                print(f"# {run.name}: finished, skipped ({run.path})", file=sys.stderr)
            else:
                print(shlex.join(run.command))
        return
    failures = [] if FLAGS.report_only else run_all(runs)
    try:
        write_report(runs)
    except ValueError as error:
        sys.exit(f"ffl_tf.compare: error: {error}")
    if failures:
        sys.exit(f"ffl_tf.compare: error: {len(failures)} run(s) failed: " + "; ".join(failures))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
