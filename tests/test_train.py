"""The training CLI end to end: flags, data, results, resume, divergence, multi-worker."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl.testing import flagsaver

from ffl_tf import backbones, train
from ffl_tf.runs import checkpoint, run_dir
from tests.data.images import write_png

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tiny, fast settings shared by the runs below.
TINY = ["--backbones=resnet8,resnet8", "--shared_stages=1", "--eval_batch_size=64", "--rampup_epochs=1",
        "--lr_decay_epochs=100"]


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffl_tf.train", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout, env=cli_env(),
    )


def digits_args(tmp_path: pathlib.Path, model_dir: pathlib.Path, *extra: str) -> list[str]:
    return ["--dataset=digits", f"--data_dir={tmp_path / 'tfds'}", f"--model_dir={model_dir}", "--batch_size=32",
            "--steps_per_epoch=5", *TINY, *extra]


def read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def test_help_lists_flags_with_defaults():
    result = run_cli("--help")  # absl exits with status 1 after printing help
    for text in ("--backbones", "resnet32,resnet32", "--rampup_epochs", "80.0", "--strategy", "multi_worker",
                 "--mixed_precision", "--model_dir", "--steps_per_epoch"):
        assert text in result.stdout, text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backbones=resnet33,resnet32"], "--backbones: Unknown backbone 'resnet33'; choose from: resnet8"),
        (["--backbones=keras:NoSuchNet,resnet32", "--shared_stages=0"], "keras:NoSuchNet is not a keras.applications"),
        (["--backbones=no_such_module:build,resnet32", "--shared_stages=0"], "cannot import 'build' from module"),
        (["--pretrained=imagenet"], "--pretrained=imagenet loads weights into keras:<application> branches only"),
        (["--backbones=resnet32,wrn16_2", "--shared_stages=1"], "cannot share stages"),
        (["--shared_stages=3"], "shared_stages=3 is too large for resnet32"),
        (["--method=dml", "--shared_stages=2"], "DML trains independent networks: use shared_stages=0"),
        (["--method=dml", "--backbones=resnet32"], "at least 2 branches"),
        (["--method=one", "--backbones=resnet32,wrn16_2"], "cannot share stages"),
        (["--method=dml", "--fusion_channels=32"], "--fusion_channels do(es) not apply to --method=dml"),
        (["--method=vanilla", "--temperature=2"], "--temperature do(es) not apply to --method=vanilla"),
        (["--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
        (["--lr_decay_epochs=150,100"], "must be positive and increasing"),
        (["--dataset=image_folder"], "--dataset=image_folder needs --data_dir"),
        (["--dataset=cifar10", "--data_dir=/no/such/dir"], "--data_dir=/no/such/dir is not a directory"),
        (["--strategy=multi_worker"], "needs the TF_CONFIG environment variable"),
        (["--dataset=no_such_dataset"], "--dataset=no_such_dataset is neither a built-in dataset"),
    ],
)
def test_bad_flags_fail_fast_with_a_clear_message(args, message):
    result = run_cli(*args, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_fails_within_seconds(tmp_path):
    start = time.monotonic()
    result = run_cli("--dataset=cifar10", f"--data_dir={tmp_path}", f"--model_dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - start < 45
    assert "cifar10" in result.stderr and "--data_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # no work started


def test_cifar10_through_tfds_mock_data(tmp_path):
    """The real tfds.load path with generated examples, in-process (mock_data patches tfds here)."""
    model_dir = tmp_path / "run"
    # The learning rate scales with the batch (0.2 at 32 images -> 0.1 at 16) and decays x0.1 after epoch 1.
    argv = ["train", "--dataset=cifar10", f"--model_dir={model_dir}", "--epochs=2", "--steps_per_epoch=2",
            "--batch_size=16", *TINY, "--learning_rate=0.2", "--lr_base_batch_size=32", "--lr_decay_epochs=1",
            "--verbose=0"]
    with tfds.testing.mock_data(num_examples=48), flagsaver.flagsaver():
        train.FLAGS(argv)
        train.main(argv[:1])
    results = read_json(model_dir / run_dir.RESULTS)
    assert list(results["accuracy"]) == ["branch_0", "branch_1", "branch_mean", "ensemble", "fused"]
    assert all(0.0 <= v <= 1.0 for v in results["accuracy"].values())
    assert results["steps"] == 4
    config = read_json(model_dir / run_dir.CONFIG)
    assert config["model"]["image_shape"] == [32, 32, 3] and config["model"]["num_classes"] == 10
    history = (model_dir / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("learning_rate")
    assert [float(row.split(",")[column]) for row in history[1:]] == pytest.approx([0.1, 0.01])


def test_image_folder_run_leaves_a_complete_run_directory(tmp_path, squares_folder):
    model_dir = tmp_path / "run"
    result = run_cli("--dataset=image_folder", f"--data_dir={squares_folder}", f"--model_dir={model_dir}",
                     "--epochs=2", "--steps_per_epoch=4", "--batch_size=32", *TINY, "--verbose=2")
    assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(model_dir / run_dir.RESULTS)
    counts = results["trainable_parameters"]
    assert counts["total"] == counts["branches"] + counts["fusion"] and counts["fusion"] > 0
    assert results["eval_examples"] == 1020  # 20% of 5100, held out with the seed
    assert results["throughput"]["train_images_per_second"] > 0
    assert "fused" in result.stdout and "branch_mean" in result.stdout  # the printed table
    flags_text = (model_dir / run_dir.FLAGS_FILE).read_text()
    assert "--backbones=resnet8,resnet8" in flags_text and "--epochs=2" in flags_text
    assert checkpoint.latest(str(model_dir / run_dir.CHECKPOINTS))[0] == (2, 0)
    assert any((model_dir / run_dir.LOGS).rglob("events.out.tfevents.*"))
    model, _, _ = run_dir.load_trained_model(str(model_dir))
    assert model.get_layer("branch_0") is not None


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


def bad_image_folder(root: pathlib.Path) -> pathlib.Path:
    """Three classes of 8 small PNGs, plus a truncated PNG, a text file named .jpg and an empty class."""
    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cat"):
        for i in range(8):
            write_png(root / "train" / name / f"{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    good = (root / "train" / "ant" / "0.png").read_bytes()
    (root / "train" / "bee" / "truncated.png").write_bytes(good[:100])
    (root / "train" / "cat" / "notes.jpg").write_text("not an image")
    (root / "train" / "dog").mkdir()
    return root


def test_bad_images_and_an_empty_class_stop_the_run_in_seconds_naming_them(tmp_path):
    root = bad_image_folder(tmp_path / "images")
    start = time.monotonic()
    result = run_cli("--dataset=image_folder", f"--data_dir={root}", f"--model_dir={tmp_path / 'run'}", *TINY)
    assert result.returncode != 0 and time.monotonic() - start < 60
    assert f"{root / 'train' / 'dog'} holds no" in result.stderr and "--skip_bad_images" in result.stderr
    (root / "train" / "dog" / "0.png").write_bytes((root / "train" / "ant" / "0.png").read_bytes())
    result = run_cli("--dataset=image_folder", f"--data_dir={root}", f"--model_dir={tmp_path / 'run'}", *TINY)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "2 image files" in message and "truncated.png" in message and "notes.jpg" in message
    assert "--skip_bad_images" in message
    assert not (tmp_path / "run").exists()  # nothing started


def test_skip_bad_images_trains_without_them_and_reports_how_many(tmp_path):
    root = bad_image_folder(tmp_path / "images")
    model_dir = tmp_path / "run"
    result = run_cli("--dataset=image_folder", f"--data_dir={root}", f"--model_dir={model_dir}", "--skip_bad_images",
                     "--epochs=1", "--batch_size=4", "--validation_fraction=0.25", *TINY, "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "leaving out empty class folders ['dog']" in result.stderr
    assert "2 image files" in result.stderr and "Training without them" in result.stderr
    results = read_json(model_dir / run_dir.RESULTS)
    assert results["dropped_images"] == 2 and results["eval_examples"] == 6  # 25% of the 24 good images
    assert read_json(model_dir / run_dir.CONFIG)["model"]["num_classes"] == 3


def test_start_up_is_quiet_at_the_default_verbosity(tmp_path):
    result = run_cli(*digits_args(tmp_path, tmp_path / "run", "--epochs=1", "--verbose=0"))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "dataset_info.py" not in output and "dataset_builder.py" not in output  # tfds's INFO lines
    assert "oneDNN custom operations" not in output and "cuda" not in output.lower()
    assert "Run directory:" in result.stderr  # our own progress still shows
    verbose = run_cli(*digits_args(tmp_path, tmp_path / "run2", "--epochs=1", "--verbose=0"), "--verbosity=1")
    assert "oneDNN custom operations" in verbose.stderr


def test_your_own_builder_from_the_cli_trains_and_its_run_rebuilds_it(tmp_path, squares_folder):
    model_dir = tmp_path / "run"
    result = run_cli("--dataset=image_folder", f"--data_dir={squares_folder}", f"--model_dir={model_dir}",
                     "--backbones=tests.backbones.builders:tiny_cnn,resnet8", "--shared_stages=0", "--epochs=1",
                     "--steps_per_epoch=2", "--batch_size=16", "--eval_batch_size=100", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    backbones = read_json(model_dir / run_dir.CONFIG)["model"]["backbones"]
    assert backbones == ["tests.backbones.builders:tiny_cnn", "resnet8"]
    model, _, _ = run_dir.load_trained_model(str(model_dir))  # what export and the inspection commands do
    assert model.get_layer("branch_0").get_layer("tiny_cnn") is not None


def test_a_builder_that_breaks_the_contract_is_refused_before_any_run_is_written(tmp_path, squares_folder):
    model_dir = tmp_path / "run"
    result = run_cli("--dataset=image_folder", f"--data_dir={squares_folder}", f"--model_dir={model_dir}",
                     "--backbones=tests.backbones.builders:pooled,resnet8", "--shared_stages=0", timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tests.backbones.builders:pooled returned a tensor of shape (None, 8)" in result.stderr.splitlines()[-1]
    assert not (model_dir / run_dir.CONFIG).exists()


def test_the_fine_tuning_flagfile_trains_without_the_weights_it_cannot_download(tmp_path, squares_folder):
    result = run_cli("--flagfile=configs/finetune_image_folder.flags", "--pretrained=none",
                     f"--data_dir={squares_folder}", f"--model_dir={tmp_path / 'run'}", "--image_size=64",
                     "--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    config = read_json(tmp_path / "run" / run_dir.CONFIG)
    assert config["model"]["backbones"] == ["keras:MobileNetV3Small"] * 2 and config["model"]["pretrained"] == "none"


def test_pretrained_offline_without_the_weights_fails_in_seconds_naming_the_file(tmp_path, squares_folder):
    # Offline even on a machine with network: the child process's sockets refuse to connect.
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "sitecustomize.py").write_text(
        "import socket\n"
        "def refuse(*args, **kwargs):\n    raise OSError('network disabled by the test')\n"
        "socket.create_connection = refuse\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ffl_tf.train", "--flagfile=configs/finetune_image_folder.flags",
         f"--data_dir={squares_folder}", f"--model_dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env=cli_env(KERAS_HOME=str(tmp_path / "keras"), PYTHONPATH=str(tmp_path / "offline")),
    )
    assert result.returncode != 0 and time.monotonic() - start < 60
    message = result.stderr.strip().splitlines()[-1]
    assert "weights_mobilenet_v3_small" in message and str(tmp_path / "keras" / "models") in message
    assert "Traceback" not in result.stderr


def test_any_tfds_image_dataset_by_name_trains(tmp_path):
    model_dir = tmp_path / "run"
    argv = ["train", "--dataset=tf_flowers", f"--data_dir={tmp_path}", f"--model_dir={model_dir}",
            "--image_size=32", "--epochs=1", "--steps_per_epoch=2", "--batch_size=4", *TINY, "--verbose=0"]
    with tfds.testing.mock_data(num_examples=12), flagsaver.flagsaver():
        train.FLAGS(argv)
        train.main(argv[:1])
    results = read_json(model_dir / run_dir.RESULTS)
    assert results["steps"] == 2 and results["eval_examples"] == 12
    assert read_json(model_dir / run_dir.CONFIG)["class_names"] == ["dandelion", "daisy", "tulips", "sunflowers",
                                                                     "roses"]


def test_a_keras_application_too_large_for_the_data_is_refused_before_any_work(tmp_path):
    start = time.monotonic()
    result = run_cli(*digits_args(tmp_path, tmp_path / "run", "--backbones=keras:MobileNetV3Small,"
                                  "keras:MobileNetV3Small", "--shared_stages=0", "--epochs=1"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ffl_tf.train: error: --backbones=keras:MobileNetV3Small cannot take the data's "
                              "8x8x1 images (Input size must be at least 32x32")
    # The fix works for digits, whose size --image_size cannot change: registry backbones.
    assert message.endswith("use registry backbones, e.g. --backbones=resnet20,resnet20.")
    assert not (tmp_path / "run").exists() and time.monotonic() - start < 120


def test_a_users_network_that_refuses_the_data_is_refused_with_the_fix_for_resizable_data():
    with pytest.raises(backbones.BackboneError) as error:
        backbones.check_input("tests.backbones.builders:tiny_cnn", (8, 8, 1), fix="pass --image_size=16.")
    assert str(error.value).startswith("--backbones=tests.backbones.builders:tiny_cnn cannot take the data's 8x8x1 "
                                       "images (")
    assert str(error.value).endswith("Fix: pass --image_size=16.")
    backbones.check_input("tests.backbones.builders:tiny_cnn", (8, 8, 3), fix="-")  # three channels: fine


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
