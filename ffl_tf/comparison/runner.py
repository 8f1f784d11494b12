"""Running a comparison's training runs: each (method, seed) once, even with several comparisons on one root.

`ffl_tf.compare` started with the same flags and root on several machines sharing the storage (or twice on
one) splits the runs between them. Before it starts a run, a comparison takes the run directory's lock
(`ffl_tf.runs.lock`) and hands it to the `ffl_tf.train` process it starts, which adopts it; another
comparison finds the run held and goes on with the next one ("running on host X"). One left with nothing but
runs held elsewhere checks them every poll_seconds() until they finish, training any whose holder died or
gave up (that run resumes from its checkpoint); then it writes the report, as each comparison of the root
does: the same files from the same runs, written atomically, so who writes them last does not matter.

    FFL_TF_COMPARE_POLL_SECONDS (30)  how often a waiting comparison checks the runs held elsewhere: runs take
        minutes to hours, so half a minute costs little, and each check is a few file reads on shared storage.
"""

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from ffl_tf import methods
from ffl_tf.runs import checkpoint, lock, preemption, run_dir

LOG = "train.log"
POLL_SECONDS = 30.0


def poll_seconds() -> float:
    return lock.seconds("FFL_TF_COMPARE_POLL_SECONDS", POLL_SECONDS)


@dataclasses.dataclass
class Run:
    """One training run of the comparison: its directory, the `ffl_tf.train` command that trains it, and the
    settings (resolved, `train_flags.resolve`) it trains with."""

    method: str
    seed: int
    path: str
    command: list[str]
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"


def is_finished(path: str) -> bool:
    """Whether the run wrote results.json after the checkpoint of its last epoch (rerunning it would only evaluate)."""
    try:
        epochs = run_dir.read_results(path)["epochs"]
    except (OSError, ValueError, KeyError):
        return False
    latest = checkpoint.latest(os.path.join(path, run_dir.CHECKPOINTS))
    return latest is not None and latest[0] == (epochs, 0)


class Signals:
    """SIGTERM/SIGINT: passed on to the running training process as SIGTERM, which stops it with a checkpoint.

    `lock_token` is the token of the run lock the comparison holds for that process, which adopts it.
    """

    def __init__(self):
        self.received = False
        self.child: subprocess.Popen | None = None
        self.lock_token: str | None = None

    def handle(self, signum, frame) -> None:
        self.received = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def train(run: Run, signals: Signals) -> int:
    """Runs (or resumes) one training run, its output appended to its train.log; returns its exit status."""
    os.makedirs(run.path, exist_ok=True)
    env = {**os.environ, lock.TOKEN_ENV: signals.lock_token} if signals.lock_token else None
    with open(os.path.join(run.path, LOG), "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command)}\n")
        log.flush()
        signals.child = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return signals.child.wait()
        finally:
            signals.child = None


def run_all(runs: list[Run], train: Callable[[Run, Signals], int], *, keep_going: bool) -> list[str]:
    """Trains the runs not finished yet with `train`, printing a line as each starts and ends, skipping those held
    by other processes and then waiting for them; returns the failures' messages.

    Exits with status 75 after a stop request, and with a one-line message at the first failure unless
    `keep_going`.
    """
    signals = Signals()
    previous = {sig: signal.signal(sig, signals.handle) for sig in preemption.SIGNALS}
    runner = _Runner(runs, train, signals, keep_going)
    try:
        for index in range(1, len(runs) + 1):
            if signals.received:
                break
            runner.visit(index)
        runner.wait_for_others()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signals.received:
        print("ffl_tf.compare: stopped on request; rerun the same command to continue.", file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    return runner.failures


class _Runner:
    """The comparison's progress: failures so far, and the runs held by other processes (index -> holder)."""

    def __init__(self, runs: list[Run], train: Callable[[Run, Signals], int], signals: Signals, keep_going: bool):
        self.runs, self.train, self.signals, self.keep_going = runs, train, signals, keep_going
        self.failures: list[str] = []
        self.elsewhere: dict[int, lock.Holder] = {}

    def visit(self, index: int) -> None:
        """Skips the run `index` (from 1) if finished, leaves it for later if another live process holds it,
        else takes its lock and trains it."""
        run, seen = self.runs[index - 1], self.elsewhere.pop(index, None)
        prefix = f"[{index}/{len(self.runs)}] {run.name}:"
        if is_finished(run.path):
            print(f"{prefix} finished earlier, skipped" if seen is None else f"{prefix} finished on {seen.host}",
                  flush=True)
            return
        claim = lock.RunLock(run.path, command="ffl_tf.compare")
        try:
            claim.acquire()
        except lock.LockHeldError as held:
            if seen is None or seen.token != held.holder.token:
                print(f"{prefix} running on host {held.holder.host} (pid {held.holder.pid}), skipped for now",
                      flush=True)
            self.elsewhere[index] = held.holder
            return
        except lock.LockError as error:  # a run directory that cannot be written
            print(f"{prefix} cannot start: {error}", flush=True)
            self._failed(f"{run.name} failed: {error}")
            return
        try:
            if claim.took_over:
                print(f"{prefix} {claim.took_over}", flush=True)
            if is_finished(run.path):  # finished elsewhere between the two looks
                print(f"{prefix} finished elsewhere, skipped", flush=True)
                return
            claim.start_heartbeats()
            self.signals.lock_token = claim.token
            self._train(prefix, run)
        finally:
            self.signals.lock_token = None
            claim.release()

    def _train(self, prefix: str, run: Run) -> None:
        log = os.path.join(run.path, LOG)
        print(f"{prefix} started, log {log}", flush=True)
        start = time.monotonic()
        status = self.train(run, self.signals)
        elapsed = _duration(time.monotonic() - start)
        if status == 0 and is_finished(run.path):
            print(f"{prefix} finished in {elapsed} ({_headline(run)})", flush=True)
        elif self.signals.received or status == preemption.EXIT_STATUS:
            self.signals.received = True
            print(f"{prefix} stopped on request after {elapsed}; its log says where it resumes", flush=True)
        else:
            print(f"{prefix} failed (exit status {status}) after {elapsed}", flush=True)
            self._failed(f"{run.name} failed: {_last_line(log)} (log: {log})")

    def _failed(self, message: str) -> None:
        self.failures.append(message)
        if not self.keep_going:
            sys.exit(f"ffl_tf.compare: error: {message}")

    def wait_for_others(self) -> None:
        """Checks the runs held elsewhere every poll_seconds() until each is finished or trained here."""
        if not self.elsewhere or self.signals.received:
            return
        interval = poll_seconds()
        print(f"Waiting for {len(self.elsewhere)} run(s) held by other processes, checking every {interval:g} s.",
              flush=True)
        while self.elsewhere and not self.signals.received:
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not self.signals.received:
                time.sleep(min(0.2, interval))
            for index in sorted(self.elsewhere):
                if not self.signals.received:
                    self.visit(index)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "(empty log)"


def _headline(run: Run) -> str:
    head = methods.get(run.method).headline(len(run.settings["backbones"]))
    return f"{head} {100 * run_dir.read_results(run.path)['accuracy'][head]:.2f}%"
