"""The training CLI across interruptions: a killed run, SIGTERM mid-epoch, a finished run rerun, a resume that
would change the run, a run directory written by an earlier version."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from ffl_tf.runs import checkpoint, run_dir
from tests.cli import REPO_ROOT, cli_env, digits_args, read_json, run_cli


def test_killed_run_resumes_where_it_stopped(tmp_path):
    model_dir = tmp_path / "run"
    args = digits_args(tmp_path, model_dir, "--epochs=4", "--verbose=2")
    process = subprocess.Popen(
        [sys.executable, "-m", "ffl_tf.train", *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=cli_env(),
    )
    ckpt_dir = str(model_dir / run_dir.CHECKPOINTS)
    deadline = time.monotonic() + 240
    while checkpoint.latest(ckpt_dir) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.latest(ckpt_dir)
    assert killed_at is not None and killed_at[0][0] < 4, "the run was not killed mid-training"

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    epoch = killed_at[0][0]
    assert f"Resuming from {killed_at[1]} (epoch {epoch}, step {epoch * 5})" in result.stderr
    assert read_json(model_dir / run_dir.RESULTS)["steps"] == 4 * 5  # continued, not restarted
    epochs = [line.split(",")[0] for line in (model_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]  # each epoch logged once, whatever the moment of the kill

    # Nothing was lost or replayed: the resumed run ends exactly where an uninterrupted one does (CPU
    # training is deterministic), which needs the restored optimizer state and the data stream continued
    # at the restored step rather than started again.
    reference_dir = tmp_path / "uninterrupted"
    assert run_cli(*digits_args(tmp_path, reference_dir, "--epochs=4", "--verbose=0")).returncode == 0
    resumed, reference = (checkpoint_arrays(d / run_dir.CHECKPOINTS / "epoch-0004.weights.h5")
                          for d in (model_dir, reference_dir))
    assert resumed.keys() == reference.keys() and len(resumed) > 100
    for name, value in reference.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def checkpoint_arrays(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array in a .weights.h5 checkpoint (weights and optimizer state), by its path in the file."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_rerunning_a_finished_run_only_evaluates(tmp_path):
    model_dir = tmp_path / "run"
    args = digits_args(tmp_path, model_dir, "--epochs=1", "--verbose=0")
    assert run_cli(*args).returncode == 0
    first = read_json(model_dir / run_dir.RESULTS)
    again = run_cli(*args)
    assert again.returncode == 0
    assert read_json(model_dir / run_dir.RESULTS)["accuracy"] == first["accuracy"]


def test_resuming_with_another_model_or_step_layout_is_refused(tmp_path):
    model_dir = tmp_path / "run"
    assert run_cli(*digits_args(tmp_path, model_dir, "--epochs=1", "--verbose=0")).returncode == 0
    for flag, message in [
        ("--backbones=resnet14,resnet14", "holds a run with a different model (backbones: ['resnet8', 'resnet8'] -> "
                                          "['resnet14', 'resnet14'])"),
        # The checkpoint's step count would mean other images per step, and mixed_float16 adds loss-scaling
        # variables to the optimizer state.
        ("--batch_size=16", "holds a run with a different training setup (batch_size: 32 -> 16)"),
        ("--mixed_precision=mixed_float16", "different training setup (mixed_precision: float32 -> mixed_float16)"),
    ]:
        result = run_cli(*digits_args(tmp_path, model_dir, "--epochs=2", flag))
        assert result.returncode != 0 and message in result.stderr, (flag, result.stderr[-2000:])
    assert checkpoint.latest(str(model_dir / run_dir.CHECKPOINTS))[0] == (1, 0)


def test_sigterm_mid_epoch_checkpoints_that_step_and_the_rerun_ends_bitwise_equal(tmp_path):
    """A preempted run (SIGTERM) saves the step it reached; rerunning it ends exactly as if never stopped."""
    model_dir = tmp_path / "run"
    # 44 steps per epoch (1438 digits in batches of 32): the signal lands early in epoch 2, far from its end.
    args = digits_args(tmp_path, model_dir, "--epochs=3", "--steps_per_epoch=44", "--checkpoint_every_steps=2",
                       "--verbose=0")
    process = subprocess.Popen([sys.executable, "-m", "ffl_tf.train", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cli_env())
    ckpt_dir = model_dir / run_dir.CHECKPOINTS
    deadline = time.monotonic() + 240
    while not (ckpt_dir / "epoch-0001-step-000002.weights.h5").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-3000:]  # EX_TEMPFAIL: preempted, retry
    (epoch, step), path = checkpoint.latest(str(ckpt_dir))
    assert epoch == 1 and 2 < step < 44, (epoch, step)
    assert f"Stopped on request at step {step} of 44 of epoch 2; saved checkpoint {path}" in stderr
    assert "Traceback" not in stderr

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch 2 resumes at step {step} of 44" in result.stderr
    assert read_json(model_dir / run_dir.RESULTS)["steps"] == 3 * 44
    epochs = [line.split(",")[0] for line in (model_dir / run_dir.HISTORY).read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]

    reference_dir = tmp_path / "uninterrupted"
    assert run_cli(*digits_args(tmp_path, reference_dir, "--epochs=3", "--steps_per_epoch=44",
                                "--verbose=0")).returncode == 0
    resumed, reference = (checkpoint_arrays(d / run_dir.CHECKPOINTS / "epoch-0003.weights.h5")
                          for d in (model_dir, reference_dir))
    assert resumed.keys() == reference.keys() and len(resumed) > 100
    for name, value in reference.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_run_directory_written_before_config_sections_of_their_own_still_resumes(tmp_path):
    """config.json model_version 2 as ffl_tf wrote it before `execution` and `split_seed`: the run resumes with
    its original command (its hold-out followed --seed then)."""
    model_dir = tmp_path / "run"
    assert run_cli(*digits_args(tmp_path, model_dir, "--epochs=1", "--seed=1", "--verbose=0")).returncode == 0
    written = read_json(model_dir / run_dir.CONFIG)
    old = {**written, "training": {**written["training"], **written.pop("execution")}}
    del old["dataset"]["split_seed"]
    (model_dir / run_dir.CONFIG).write_text(json.dumps(old))
    resumed = run_cli(*digits_args(tmp_path, model_dir, "--epochs=2", "--seed=1", "--verbose=0"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr and read_json(model_dir / run_dir.RESULTS)["epochs"] == 2
