"""The run directory's lock: one holder, refusals naming it, takeover of dead holders (same machine by process,
another by heartbeat on the storage's clock), a race of takers with one winner, heartbeats, a lock handed to a
child process."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from ffl_tf.runs import lock
from tests.cli import REPO_ROOT


def write_lock(directory, **fields) -> dict:
    """A lock file as another process would have left it: this machine's unless `fields` say otherwise."""
    record = {"host": socket.gethostname(), "pid": 0, "token": "t" * 32, "started": "2024-01-01T00:00:00+00:00",
              "command": "ffl_tf.train", "machine": lock._machine(), "pid_start": None, **fields}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / lock.LOCK).write_text(json.dumps(record))
    return record


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_second_holder_is_refused_naming_the_first_and_release_frees_the_run(tmp_path):
    run = tmp_path / "run"
    first = lock.RunLock(str(run)).acquire()
    record = json.loads((run / lock.LOCK).read_text())
    assert (record["host"], record["pid"], record["token"]) == (socket.gethostname(), os.getpid(), first.token)
    assert json.loads((run / lock.HEARTBEAT).read_text())["token"] == first.token
    with pytest.raises(lock.LockHeldError) as refused:
        lock.RunLock(str(run)).acquire()
    assert str(refused.value) == (
        f"--model_dir={run} is in use by {socket.gethostname()} pid {os.getpid()} since {record['started']} (lock "
        f"{run / lock.LOCK}). Wait for it to finish, stop it, or use another --model_dir; a lock whose process has "
        "died is taken over automatically.")
    assert json.loads((run / lock.LOCK).read_text()) == record  # the refused one changed nothing
    first.release()
    assert sorted(p.name for p in run.iterdir()) == []
    with lock.RunLock(str(run)) as second:
        assert second.took_over is None and lock.read_holder(str(run)).token == second.token
    assert not (run / lock.LOCK).exists()


def test_the_lock_of_a_process_that_ended_is_taken_over(tmp_path):
    pid = ended_pid()
    old = write_lock(tmp_path, pid=pid)
    taker = lock.RunLock(str(tmp_path)).acquire()
    assert taker.took_over == (f"Took over the lock of {tmp_path} from {old['host']} pid {pid} since "
                               f"{old['started']}: its process {pid} has ended.")
    assert lock.read_holder(str(tmp_path)).pid == os.getpid() and taker.token != old["token"]
    assert not list(tmp_path.glob("*takeover*")) and not list(tmp_path.glob(".lock-probe-*"))
    taker.release()


def test_a_live_process_holds_and_its_reused_id_does_not(tmp_path, sleeper):
    started = lock._process(sleeper)[1]
    write_lock(tmp_path, pid=sleeper, pid_start=started)
    with pytest.raises(lock.LockHeldError, match=f"pid {sleeper} since"):
        lock.RunLock(str(tmp_path)).acquire()
    # The same id, another process (it started at another time): the holder is gone.
    write_lock(tmp_path, pid=sleeper, pid_start=started + 1)
    taker = lock.RunLock(str(tmp_path)).acquire()
    assert "its id now belongs to another process" in taker.took_over
    taker.release()
    # This very process's id under a token it never took (a restarted container): gone too.
    write_lock(tmp_path, pid=os.getpid())
    taker = lock.RunLock(str(tmp_path)).acquire()
    assert "its id is now this process's" in taker.took_over
    taker.release()


def test_another_hosts_lock_is_judged_by_its_heartbeat_on_the_storages_clock(tmp_path, monkeypatch):
    monkeypatch.setenv("FFL_TF_LOCK_STALE_SECONDS", "30")
    old = write_lock(tmp_path, host="other-host", pid=os.getpid(), machine="another machine")
    (tmp_path / lock.HEARTBEAT).write_text(json.dumps({"token": old["token"]}))
    # Fresh by the storage's clock, whatever this machine's clock says (here: a day ahead).
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400)
    with pytest.raises(lock.LockHeldError, match="in use by other-host pid"):
        lock.RunLock(str(tmp_path)).acquire()
    monkeypatch.setattr(time, "time", real_time)
    # A recent heartbeat of another token (an earlier holder's) says nothing about this one: its lock is old.
    past = time.time() - 60
    os.utime(tmp_path / lock.LOCK, (past, past))
    (tmp_path / lock.HEARTBEAT).write_text(json.dumps({"token": "earlier holder"}))
    assert re.fullmatch(r"its last heartbeat is 6\d s old by the storage's clock, over 30 s",
                        lock.stale_reason(str(tmp_path), lock.read_holder(str(tmp_path))))
    (tmp_path / lock.HEARTBEAT).write_text(json.dumps({"token": old["token"]}))
    assert lock.live_holder(str(tmp_path)).host == "other-host"  # its own heartbeat is fresh
    os.utime(tmp_path / lock.HEARTBEAT, (past, past))
    assert lock.live_holder(str(tmp_path)) is None
    taker = lock.RunLock(str(tmp_path)).acquire()
    assert re.search(r": its last heartbeat is 6\d s old by the storage's clock, over 30 s\.$", taker.took_over)
    taker.release()


TAKER = """
import os, sys, time
from ffl_tf.runs import lock
go, done = sys.argv[2:]
while not os.path.exists(go):
    time.sleep(0.005)
try:
    held = lock.RunLock(sys.argv[1]).acquire()
except lock.LockHeldError as error:
    print("refused", error.holder.pid, flush=True)
else:
    print("won", os.getpid(), flush=True)
    while not os.path.exists(done):
        time.sleep(0.01)
    held.release()
"""


def test_of_several_takers_of_a_dead_lock_exactly_one_wins(tmp_path):
    run = tmp_path / "run"
    write_lock(run, pid=ended_pid())
    go, done = tmp_path / "go", tmp_path / "done"
    takers = [subprocess.Popen([sys.executable, "-c", TAKER, str(run), str(go), str(done)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)  # every taker has started and is waiting for the word
    go.touch()
    first_lines = sorted(taker.stdout.readline().split() for taker in takers)
    done.touch()
    for taker in takers:
        taker.wait(timeout=30)
    winners = [pid for outcome, pid in first_lines if outcome == "won"]
    assert len(winners) == 1, first_lines
    assert first_lines.count(["refused", winners[0]]) == 3
    assert not run.joinpath(lock.LOCK).exists() and not list(run.glob("*takeover*"))


def test_heartbeats_refresh_and_a_lost_lock_is_noticed(tmp_path, monkeypatch):
    monkeypatch.setenv("FFL_TF_LOCK_HEARTBEAT_SECONDS", "0.05")
    held = lock.RunLock(str(tmp_path)).acquire()
    beat = tmp_path / lock.HEARTBEAT
    os.utime(beat, (1.0, 1.0))
    held.start_heartbeats()
    deadline = time.monotonic() + 10
    while beat.stat().st_mtime < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert beat.stat().st_mtime > time.time() - 60  # refreshed by the timer
    # Another process judged this one dead and took the lock over: the next heartbeat (a checkpoint's) says so.
    other = write_lock(tmp_path, host="other-host", pid=7, token="o" * 32)
    with pytest.raises(lock.LockLostError, match="now belongs to other-host pid 7 since .*only one process may"):
        held.heartbeat()
    held.release()
    assert json.loads((tmp_path / lock.LOCK).read_text()) == other  # never removes another's lock


ADOPTER = """
import json, os, sys
from ffl_tf.runs import lock
held = lock.RunLock(sys.argv[1]).acquire()
print(json.dumps({**lock.read_holder(sys.argv[1]).__dict__, "env": os.environ.get(lock.TOKEN_ENV)}), flush=True)
held.release()
"""


def test_a_lock_handed_to_a_child_process_is_adopted_by_it(tmp_path):
    parent = lock.RunLock(str(tmp_path), command="ffl_tf.compare").acquire()
    child = subprocess.run([sys.executable, "-c", ADOPTER, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, lock.TOKEN_ENV: parent.token})
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert seen["token"] == parent.token and seen["pid"] != os.getpid() and seen["env"] is None
    assert not (tmp_path / lock.LOCK).exists()  # the child released it
    parent.release()
    # Without the token the same child is refused.
    held = lock.RunLock(str(tmp_path)).acquire()
    child = subprocess.run([sys.executable, "-c", ADOPTER, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 1 and "LockHeldError" in child.stderr
    held.release()


def test_a_bad_timing_setting_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FFL_TF_LOCK_STALE_SECONDS", "soon")
    with pytest.raises(ValueError, match="FFL_TF_LOCK_STALE_SECONDS=soon: use a positive number of seconds"):
        lock.RunLock(str(tmp_path / "run")).acquire()
    assert not (tmp_path / "run").exists()


def test_no_checkpoint_is_written_once_the_lock_is_lost(tmp_path):
    from ffl_tf.runs import callbacks
    from tests.runs.test_checkpoint import trained_model

    held = lock.RunLock(str(tmp_path)).acquire()
    saved = tmp_path / "checkpoints"
    callback = callbacks.Checkpoints(str(saved), epochs=2, steps_per_epoch=1, heartbeat=held.heartbeat)
    callback.set_model(trained_model(1))
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0)
    assert [p.name for p in saved.iterdir()] == ["epoch-0001.weights.h5"]
    (tmp_path / lock.LOCK).unlink()  # removed by hand while the run lives
    callback.on_epoch_begin(1)
    with pytest.raises(lock.LockLostError, match=r"\(lock.json was removed\)"):
        callback.on_epoch_end(1)
    assert [p.name for p in saved.iterdir()] == ["epoch-0001.weights.h5"]
    held.release()
