"""Run directories: rebuilding a trained model, and clear errors for directories that cannot be used."""

import keras
import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.runs import checkpoint, history, run_dir
from ffl_tf.runs.config import RunConfig
from ffl_tf.utils import atomic

CONFIG = {
    "model_version": run_dir.MODEL_VERSION,
    "method": "ffl",
    "model": {"backbones": ["resnet8", "resnet8"], "num_classes": 10, "image_shape": [8, 8, 3],
              "shared_stages": 1, "mean": [0.0], "std": [255.0], "fusion_channels": None, "sync_batchnorm": False},
    "dataset": {"dataset": "digits"},
}


def make_run(path, config=CONFIG):
    model = run_dir.build_model(config)
    model.compile(keras.optimizers.SGD(0.1), distillation_loss=methods.loss_fn(config["method"]), steps_per_epoch=1,
                  rampup_epochs=1.0, weight_decay=0.0)
    atomic.write_json(str(path / run_dir.CONFIG), config)
    checkpoint.save(model, str(path / run_dir.CHECKPOINTS), 1)
    return model


def test_load_trained_model_restores_the_weights(tmp_path):
    model = make_run(tmp_path)
    loaded, config, path = run_dir.load_trained_model(str(tmp_path))
    assert path.endswith("epoch-0001.weights.h5")
    assert config == RunConfig.from_json(CONFIG)
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    np.testing.assert_allclose(loaded(images)["fused"], model(images)["fused"], rtol=1e-6)


def test_a_directory_without_config_is_not_a_run(tmp_path):
    with pytest.raises(run_dir.RunError, match="is not a training run: config.json is missing"):
        run_dir.load_trained_model(str(tmp_path))


def test_a_run_without_checkpoint_says_so(tmp_path):
    atomic.write_json(str(tmp_path / run_dir.CONFIG), CONFIG)
    with pytest.raises(run_dir.RunError, match="has no checkpoint yet"):
        run_dir.load_trained_model(str(tmp_path))


def test_a_checkpoint_that_does_not_fit_the_config_is_refused(tmp_path):
    make_run(tmp_path)
    other = {**CONFIG, "model": {**CONFIG["model"], "backbones": ["resnet8"] * 3}}
    atomic.write_json(str(tmp_path / run_dir.CONFIG), other)
    with pytest.raises(run_dir.RunError, match="does not fit the model described by config.json"):
        run_dir.load_trained_model(str(tmp_path))


def test_a_run_written_before_pytorch_padding_is_refused_in_one_line(tmp_path):
    make_run(tmp_path)
    old = {key: value for key, value in CONFIG.items() if key != "model_version"}  # version 1 wrote none
    atomic.write_json(str(tmp_path / run_dir.CONFIG), old)
    with pytest.raises(run_dir.RunError, match="earlier ffl_tf .model_version 1.* pad stride-2 layers differently"):
        run_dir.load_trained_model(str(tmp_path))


def test_export_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path):
    model = make_run(tmp_path)
    newest = tmp_path / run_dir.CHECKPOINTS / "epoch-0002.weights.h5"
    newest.write_bytes(b"truncated")
    loaded, _, path = run_dir.load_trained_model(str(tmp_path))
    assert path.endswith("epoch-0001.weights.h5")
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    np.testing.assert_allclose(loaded(images)["fused"], model(images)["fused"], rtol=1e-6)
    assert newest.exists()  # reading a run never moves its files


def test_default_model_dir_names_dataset_backbones_and_method():
    assert run_dir.default_model_dir("ffl", "cifar100", ["resnet32"] * 2) == "runs/cifar100-resnet32x2"
    assert run_dir.default_model_dir("dml", "cifar100", ["resnet32", "wrn16_2"]) == "runs/cifar100-resnet32+wrn16_2-dml"


def test_trim_history_keeps_only_checkpointed_epochs(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,2.0\n1,1.5\n2,1.2\n")
    history.trim_history(str(path), 2)
    assert path.read_text() == "epoch,loss\n0,2.0\n1,1.5\n"
    history.trim_history(str(tmp_path / "missing.csv"), 1)
    assert not (tmp_path / "missing.csv").exists()
