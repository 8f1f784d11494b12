"""One writer per run directory, through the training CLI: a second `ffl_tf.train` on a live run is refused in one
line naming the first and writes nothing; once the first is killed (kill -9), its lock is taken over."""

import json
import signal
import socket
import subprocess
import sys
import time

from ffl_tf.runs import checkpoint, lock, run_dir
from tests.cli import REPO_ROOT, cli_env, digits_args, run_cli


def files(directory) -> dict:
    """Every file under `directory`: its size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_live_run_refuses_a_second_writer_and_a_killed_ones_lock_is_taken_over(tmp_path):
    model_dir = tmp_path / "run"
    args = digits_args(tmp_path, model_dir, "--steps_per_epoch=2", "--verbose=0")
    first = subprocess.Popen([sys.executable, "-m", "ffl_tf.train", *args, "--epochs=100"], cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env())
    ckpt_dir = str(model_dir / run_dir.CHECKPOINTS)
    deadline = time.monotonic() + 240
    while checkpoint.latest(ckpt_dir) is None:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # alive, but writing nothing while the second one tries
    try:
        holder = json.loads((model_dir / lock.LOCK).read_text())
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), first.pid)
        before = files(model_dir)
        second = run_cli(*args, "--epochs=100", timeout=120)
        assert second.returncode == 1, second.stderr[-3000:]
        assert second.stderr.strip().splitlines()[-1] == (
            f"ffl_tf.train: error: --model_dir={model_dir} is in use by {socket.gethostname()} pid {first.pid} since "
            f"{holder['started']} (lock {model_dir / lock.LOCK}). Wait for it to finish, stop it, or use another "
            "--model_dir; a lock whose process has died is taken over automatically.")
        assert "Traceback" not in second.stderr
        assert files(model_dir) == before  # the first one's files, untouched
    finally:
        first.kill()  # kill -9: its lock stays behind
        first.communicate()
    assert json.loads((model_dir / lock.LOCK).read_text()) == holder
    # The next writer takes it over (`ffl_tf.train` acquires exactly so; test_train.py's killed run resumes so).
    taker = lock.RunLock(str(model_dir)).acquire()
    assert taker.took_over == (f"Took over the lock of {model_dir} from {socket.gethostname()} pid {first.pid} since "
                               f"{holder['started']}: its process {first.pid} has ended.")
    taker.release()
    assert not (model_dir / lock.LOCK).exists() and not (model_dir / lock.HEARTBEAT).exists()
