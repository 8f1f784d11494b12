"""Preemption: SIGTERM (a scheduler or a spot VM) or SIGINT (Ctrl-C) ends a run at the next step boundary,
after a checkpoint, with exit status 75 (EX_TEMPFAIL: "temporary failure, retry") instead of losing the
epoch in progress. Rerunning the same command continues from that step.
"""

import contextlib
import signal
from collections.abc import Iterator

import tensorflow as tf

from ffl_tf.utils import keras_compat

# sysexits.h EX_TEMPFAIL: what schedulers are told to treat as "preempted, retry".
EXIT_STATUS = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A stop was requested; the run wrote a checkpoint at (epoch, step) and ends here."""

    def __init__(self, path: str | None, epoch: int, step: int, steps_per_epoch: int):
        where = f"after epoch {epoch}" if step == 0 else f"at step {step} of {steps_per_epoch} of epoch {epoch + 1}"
        saved = f"checkpoint {path}" if path else "a checkpoint (written by the chief)"
        super().__init__(f"Stopped on request {where}; saved {saved}. Rerun the same command to continue from there.")


class StopRequest:
    """Whether SIGTERM/SIGINT arrived, agreed by every worker so all of them stop at the same step.

    Under multi-worker training each call all-reduces the flag (one scalar), so a signal that reached
    one worker stops all of them together rather than leaving the others waiting in a collective.
    """

    def __init__(self, strategy: tf.distribute.Strategy | None = None):
        self.signalled = False
        self.strategy = strategy

    def handle(self, signum, frame) -> None:
        if self.signalled and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signalled = True

    def requested(self) -> bool:
        if self.strategy is None or not keras_compat.is_multi_worker(self.strategy):
            return self.signalled
        flag = tf.constant(1.0 if self.signalled else 0.0)
        per_replica = self.strategy.run(lambda: tf.identity(flag))
        return float(self.strategy.reduce("SUM", per_replica, axis=None)) > 0


@contextlib.contextmanager
def stop_on_signals(strategy: tf.distribute.Strategy | None = None) -> Iterator[StopRequest]:
    """Installs SIGTERM/SIGINT handlers that set a `StopRequest` for the duration of the block."""
    request = StopRequest(strategy)
    previous = {sig: signal.signal(sig, request.handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
