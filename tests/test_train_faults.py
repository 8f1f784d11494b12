"""The training CLI when things fail or spread: a diverging run, damaged checkpoints, two workers."""

import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from ffl_tf.runs import checkpoint, run_dir
from tests.cli import REPO_ROOT, cli_env, digits_args, read_json, run_cli


@pytest.mark.parametrize("steps_per_epoch, learning_rate, message", [
    (5, "1e30", r"the training loss became (nan|inf) at step \d of epoch 2"),
    # One step per epoch whose update makes the weights infinite: its logged loss (computed before the
    # update) is finite, and the epoch ends right after it.
    (1, "inf", r"the weights became NaN/Inf in the last step of epoch 2"),
])
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, steps_per_epoch, learning_rate, message):
    model_dir = tmp_path / "run"
    def args(*extra):
        return digits_args(tmp_path, model_dir, f"--steps_per_epoch={steps_per_epoch}", "--verbose=0", *extra)

    assert run_cli(*args("--epochs=1")).returncode == 0
    good = (model_dir / run_dir.CHECKPOINTS / "epoch-0001.weights.h5").read_bytes()
    result = run_cli(*args("--epochs=3", f"--learning_rate={learning_rate}"))
    assert result.returncode != 0
    assert re.search(message, result.stderr, re.IGNORECASE), result.stderr[-2000:]
    assert "the last good checkpoint is" in result.stderr and "epoch-0001.weights.h5" in result.stderr
    assert "Traceback" not in result.stderr
    assert checkpoint.latest(str(model_dir / run_dir.CHECKPOINTS))[0] == (1, 0)
    assert (model_dir / run_dir.CHECKPOINTS / "epoch-0001.weights.h5").read_bytes() == good


WORKER_SCRIPT = """
import dataclasses, json, os, sys
import numpy as np
import tensorflow as tf
from absl import flags
from ffl_tf import train
from ffl_tf.data import tfds_sources
from ffl_tf.runs import training

decoded = []  # a counter of the images this worker's input pipelines decode


def counting(source_fn):
    def wrapped(*args):
        source = source_fn(*args)
        decoded.append(tf.Variable(0, dtype=tf.int64))  # after the strategy: it must come first
        def decode(x):
            decoded[0].assign_add(1)
            return source.decode(x)
        return dataclasses.replace(source, decode=decode)
    return wrapped


tfds_sources.digits_source = counting(tfds_sources.digits_source)
train.data.digits_source = tfds_sources.digits_source
flags.FLAGS(["train"] + sys.argv[1:])
model_dir = flags.FLAGS.model_dir
strategy, source, config = train.start(model_dir)
model, results = training.train(config, model_dir, strategy, source, verbose=0)
task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
np.savez(os.path.join(os.environ["WEIGHTS_DIR"], f"worker{task}.npz"), *model.get_weights(),
         decoded=decoded[0].numpy())
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_train_identical_weights(tmp_path):
    # Prepare the dataset once so the two workers do not race to build it.
    from ffl_tf import data

    data.dataset_info("digits", data_dir=str(tmp_path / "tfds"))
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    # Synchronised BN makes the moving statistics global too, so every weight is identical.
    args = digits_args(tmp_path, tmp_path / "run", "--epochs=2", "--strategy=multi_worker", "--sync_batchnorm")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=cli_env(WEIGHTS_DIR=str(tmp_path),
                        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert len(chief.files) > 10
    for key in chief.files:
        if key != "decoded":
            np.testing.assert_array_equal(chief[key], other[key])
    assert read_json(tmp_path / "run" / run_dir.RESULTS)["steps"] == 10
    assert checkpoint.latest(str(tmp_path / "run" / run_dir.CHECKPOINTS))[0] == (2, 0)
    # Each worker decodes its own half of the 1438 training and 359 evaluation digits, once (then cached).
    assert int(chief["decoded"]) + int(other["decoded"]) == 1438 + 359
    assert abs(int(chief["decoded"]) - int(other["decoded"])) <= 2


def test_a_truncated_newest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous(tmp_path):
    model_dir = tmp_path / "run"
    assert run_cli(*digits_args(tmp_path, model_dir, "--epochs=2", "--verbose=0")).returncode == 0
    newest = model_dir / run_dir.CHECKPOINTS / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # an interrupted copy

    result = run_cli(*digits_args(tmp_path, model_dir, "--epochs=3", "--verbose=0"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Checkpoint {newest} cannot be read" in result.stderr and "Traceback" not in result.stderr
    previous = model_dir / run_dir.CHECKPOINTS / "epoch-0001.weights.h5"
    assert f"Resuming from {previous} (epoch 1, step 5)" in result.stderr
    assert (model_dir / run_dir.CHECKPOINTS / "epoch-0002.weights.h5.corrupt").exists()
    assert read_json(model_dir / run_dir.RESULTS)["steps"] == 15


def test_no_readable_checkpoint_stops_in_one_line(tmp_path):
    model_dir = tmp_path / "run"
    assert run_cli(*digits_args(tmp_path, model_dir, "--epochs=1", "--verbose=0")).returncode == 0
    (model_dir / run_dir.CHECKPOINTS / "epoch-0001.weights.h5").write_text("garbage")
    result = run_cli(*digits_args(tmp_path, model_dir, "--epochs=2", "--verbose=0"))
    assert result.returncode != 0
    assert "No checkpoint in" in result.stderr and "can be read" in result.stderr
    assert "Traceback" not in result.stderr
