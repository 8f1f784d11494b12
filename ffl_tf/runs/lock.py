"""One writer per run directory: the lock a training run (or the comparison that starts it) holds on it.

    RUN/lock.json       {"host", "pid", "token", "started", "command", "machine", "pid_start"}: who holds the
                        run; created with O_CREAT | O_EXCL (exclusive on local disks and NFS v3+; no flock)
    RUN/lock.heartbeat  {"token", "time"}: rewritten atomically every heartbeat_seconds() and before each
                        checkpoint; its modification time says when the holder was last alive

A second writer is refused (`LockHeldError`, naming the holder); readers (evaluate, predict, plots, exports)
take no lock. A dead holder's lock is taken over: on the same machine (host name, boot and process namespace)
when its process has ended, is a zombie or is another one now (another start time; or this very process,
which never took that token: an id reused after a restart); from another machine when its heartbeat is older
than stale_seconds() by the storage's own clock (the mtime of a probe file just written beside it), so the
machines' clocks need not agree. Of several takers exactly one wins: each first creates
RUN/lock.json.takeover-<stale token> with O_EXCL, and the winner replaces the lock only if it still holds that
token. A parent (`ffl_tf.compare`) may hand its lock to the child it starts through TOKEN_ENV; the child adopts it.

    FFL_TF_LOCK_HEARTBEAT_SECONDS (60)  heartbeat period (besides each checkpoint)
    FFL_TF_LOCK_STALE_SECONDS (600)     age of another machine's heartbeat that counts as death: ten missed
        beats, so a long checkpoint, an NFS attribute cache (up to 60 s) or a brief storage outage never looks
        like death, while a run orphaned on a dead machine waits about ten minutes
"""

import contextlib
import dataclasses
import datetime
import json
import os
import re
import socket
import threading
import time
import uuid

from absl import logging

from ffl_tf.utils import atomic

LOCK = "lock.json"
HEARTBEAT = "lock.heartbeat"
TOKEN_ENV = "FFL_TF_RUN_LOCK_TOKEN"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0
TAKEOVER_SECONDS = 60.0  # a takeover marker (or an unreadable lock) older than this was left by a dead process
ACQUIRE_SECONDS = 10.0  # how long acquire waits for a lock being written or taken over by another process
_HELD: set[str] = set()  # the tokens this process holds


class LockError(Exception):
    """A run directory whose lock cannot be taken or was lost; the message says why and what to do."""


class LockHeldError(LockError):
    """Another live process holds the run directory."""

    def __init__(self, directory: str, holder: "Holder"):
        self.holder = holder
        super().__init__(
            f"--model_dir={directory} is in use by {holder} (lock {os.path.join(directory, LOCK)}). Wait for it to "
            "finish, stop it, or use another --model_dir; a lock whose process has died is taken over automatically.")


class LockLostError(LockError):
    """This process's lock was removed or taken over: it must stop writing the run."""

    def __init__(self, directory: str, holder: "Holder | None"):
        self.holder = holder
        why = (f"{LOCK} was removed" if holder is None else f"it now belongs to {holder}, which judged this process "
               f"dead (no heartbeat for over {stale_seconds():g} s, e.g. while the storage was unreachable)")
        super().__init__(f"Training stopped: the lock of --model_dir={directory} is no longer this process's ({why}); "
                         "only one process may write a run. Its checkpoints are kept: rerun once the other has ended.")


def seconds(name: str, default: float) -> float:
    """A duration from the environment variable `name`, else `default`; raises ValueError naming a bad value."""
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{name}={text}: use a positive number of seconds, e.g. {default:g}.")
    return value


def heartbeat_seconds() -> float:
    return seconds("FFL_TF_LOCK_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)


def stale_seconds() -> float:
    return seconds("FFL_TF_LOCK_STALE_SECONDS", STALE_SECONDS)


@dataclasses.dataclass(frozen=True)
class Holder:
    """A run directory's holder as its lock file says; `mtime` is that file's modification time."""

    host: str
    pid: int
    token: str
    started: str
    command: str = ""
    machine: str | None = None
    pid_start: int | None = None
    mtime: float = 0.0
    readable: bool = True

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid} since {self.started}" if self.readable else "a process writing its lock"


def read_holder(directory: str) -> Holder | None:
    """The holder of `directory`'s lock, None if it has none (an unreadable lock file gives readable=False)."""
    try:
        with open(os.path.join(directory, LOCK), "rb") as f:
            stat, text = os.fstat(f.fileno()), f.read()  # opening revalidates NFS's cached attributes
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
        return Holder(str(value["host"]), int(value["pid"]), str(value["token"]), str(value["started"]),
                      str(value.get("command", "")), value.get("machine"), value.get("pid_start"), stat.st_mtime)
    except (ValueError, KeyError, TypeError):  # being written, or its writer died half-way
        return Holder("?", 0, f"unreadable-{stat.st_ino}-{stat.st_mtime_ns}", "?", mtime=stat.st_mtime, readable=False)


def storage_time(directory: str) -> float:
    """Now by the clock of the storage holding `directory`: the modification time of a file just written there."""
    probe = os.path.join(directory, f".lock-probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "x") as f:
            f.write("probe\n")
            f.flush()
            os.fsync(f.fileno())
        return os.stat(probe).st_mtime
    except OSError:
        return time.time()  # not writable: the local clock is the best guess (such a reader cannot take over)
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def last_beat(directory: str, holder: Holder) -> float:
    """When `holder` last showed it was alive, by the storage's clock: its heartbeat's (or lock file's) mtime."""
    try:
        with open(os.path.join(directory, HEARTBEAT), "rb") as f:
            mtime, beat = os.fstat(f.fileno()).st_mtime, json.loads(f.read())
        if isinstance(beat, dict) and beat.get("token") == holder.token:
            return max(mtime, holder.mtime)
    except (OSError, ValueError):
        pass
    return holder.mtime


def stale_reason(directory: str, holder: Holder) -> str | None:
    """Why `holder` is dead (its lock may be taken over), or None if it may be alive."""
    if holder.readable and holder.host == socket.gethostname() and holder.machine == _machine():
        return _local_death(holder)
    limit = stale_seconds() if holder.readable else min(stale_seconds(), TAKEOVER_SECONDS)
    age = storage_time(directory) - last_beat(directory, holder)
    return f"its last heartbeat is {age:.0f} s old by the storage's clock, over {limit:g} s" if age > limit else None


def live_holder(directory: str) -> Holder | None:
    """The live holder of `directory`, None if it is free or its holder died."""
    holder = read_holder(directory)
    return holder if holder is not None and stale_reason(directory, holder) is None else None


def _machine() -> str | None:
    """This machine's boot and process namespace (Linux): a host name alone may be shared (containers)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _process(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks after boot) of a process, None if it does not exist; OSError without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        raise
    return fields[0], int(fields[19])


def _local_death(holder: Holder) -> str | None:
    """Why a holder on this machine is dead, or None if its process is alive."""
    ended = f"its process {holder.pid} has ended"
    if holder.pid == os.getpid():
        return None if holder.token in _HELD else f"{ended} (its id is now this process's)"
    if holder.pid <= 0:
        return ended
    try:
        found = _process(holder.pid)
    except OSError:  # no /proc: ask the kernel whether the id exists
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return ended
        except PermissionError:
            pass
        return None
    if found is None or found[0] in ("Z", "X"):
        return ended
    if holder.pid_start is not None and found[1] != holder.pid_start:
        return f"{ended} (its id now belongs to another process)"
    return None


def _create(path: str, record: dict) -> bool:
    """Creates the lock file holding `record` unless one exists (O_EXCL: exactly one creator wins)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class RunLock:
    """The lock of one run directory, held by this process from `acquire` to `release` (also a context manager).

    `took_over` says whose dead lock `acquire` replaced, and why (for the caller's warning).
    """

    def __init__(self, directory: str, command: str = "ffl_tf.train"):
        self.directory, self.command = directory, command
        self.path = os.path.join(directory, LOCK)
        self.token: str | None = None
        self.took_over: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Takes the lock, creating the directory; adopts one a parent process handed over (TOKEN_ENV) and takes
        over a dead holder's. Raises LockHeldError if a live process holds it, LockError if it cannot be written."""
        heartbeat_seconds(), stale_seconds()  # a bad setting fails before anything is written
        try:
            os.makedirs(self.directory, exist_ok=True)
            record = self._take(self._record(uuid.uuid4().hex), time.monotonic() + ACQUIRE_SECONDS)
            self.token = record["token"]
            _HELD.add(self.token)
            self._write_heartbeat()
        except OSError as error:
            raise LockError(f"--model_dir={self.directory} is not writable ({error.strerror or error}); choose "
                            "another.") from None
        return self

    def _take(self, record: dict, deadline: float) -> dict:
        """Creates the lock holding `record` (or adopts or takes one over); returns the record written."""
        while not _create(self.path, record):
            holder = read_holder(self.directory)
            if holder is None:
                continue  # released meanwhile
            if holder.readable and holder.token == os.environ.get(TOKEN_ENV):
                record = self._record(os.environ.pop(TOKEN_ENV))
                atomic.write_json(self.path, record)  # this process holds it now (its parent hands it over)
                return record
            reason = stale_reason(self.directory, holder)
            if reason is not None and self._take_over(holder, record):
                self.took_over = f"Took over the lock of {self.directory} from {holder}: {reason}."
                return record
            if (reason is None and holder.readable) or time.monotonic() > deadline:
                raise LockHeldError(self.directory, holder)
            time.sleep(0.05)  # a lock being written, or taken over by another process
        return record

    def _take_over(self, holder: Holder, record: dict) -> bool:
        """Replaces `holder`'s dead lock by `record`; of several processes trying at once, exactly one succeeds."""
        marker = f"{self.path}.takeover-" + re.sub(r"[^\w-]", "_", holder.token)[:64]
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if storage_time(self.directory) - os.stat(marker).st_mtime > TAKEOVER_SECONDS:
                    os.remove(marker)  # its taker died half-way
            return False
        try:
            current = read_holder(self.directory)
            if current is None or current.token != holder.token:
                return False  # released or taken over meanwhile
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            return _create(self.path, record)
        finally:
            with contextlib.suppress(OSError):
                os.remove(marker)

    def heartbeat(self) -> None:
        """Refreshes the heartbeat; raises LockLostError if the lock is no longer this process's."""
        holder = read_holder(self.directory)
        if holder is None or holder.token != self.token:
            raise LockLostError(self.directory, holder)
        self._write_heartbeat()

    def start_heartbeats(self) -> None:
        """Refreshes the heartbeat every heartbeat_seconds() from a thread, until `release`."""
        interval, self._stop = heartbeat_seconds(), threading.Event()

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.heartbeat()
                except LockLostError as lost:
                    if lost.holder is not None:  # a lock merely released (by a child it was handed to) is no news
                        logging.warning("%s", lost)
                    return
                except OSError as error:
                    logging.warning("Cannot refresh the heartbeat of %s (%s); trying again in %g s.", self.path,
                                    error, interval)

        self._thread = threading.Thread(target=beat, name=f"heartbeat of {self.path}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stops the heartbeats and removes the lock if it is still this process's; never raises."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread, token, self.token = None, self.token, None
        if token is None:
            return
        _HELD.discard(token)
        try:
            holder = read_holder(self.directory)
            if holder is not None and holder.token == token:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, HEARTBEAT))
                os.remove(self.path)
        except OSError as error:  # left behind, it is taken over as the lock of a dead process
            logging.warning("Cannot remove the lock %s (%s).", self.path, error)

    def _record(self, token: str) -> dict:
        own = _process(os.getpid()) if os.path.isdir("/proc/self") else None
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "started": _now(),
                "command": self.command, "machine": _machine(), "pid_start": own[1] if own else None}

    def _write_heartbeat(self) -> None:
        atomic.write_json(os.path.join(self.directory, HEARTBEAT), {"token": self.token, "time": _now()})
