"""The training CLI end to end: flags, data, outputs, users' networks and the errors before any work."""

import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl.testing import flagsaver

from ffl_tf import backbones, train
from ffl_tf.runs import checkpoint, run_dir
from tests.cli import REPO_ROOT, TINY, cli_env, digits_args, read_json, run_cli
from tests.data.images import write_png


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
