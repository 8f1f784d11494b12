"""Run directories: rebuilding a trained model, and clear errors for directories that cannot be used."""

import keras
import numpy as np
import pytest

from ffl_tf import atomic, checkpoint, run_dir

CONFIG = {
    "model": {"backbones": ["resnet8", "resnet8"], "num_classes": 10, "image_shape": [8, 8, 3],
              "shared_stages": 1, "mean": [0.0], "std": [255.0], "fusion_channels": None, "sync_bn": False},
    "dataset": {"name": "digits"},
}


def make_run(path, config=CONFIG):
    model = run_dir.build_model(config)
    model.compile(keras.optimizers.SGD(0.1), steps_per_epoch=1)
    atomic.write_json(str(path / run_dir.CONFIG), config)
    checkpoint.save(model, str(path / run_dir.CHECKPOINTS), 1)
    return model


def test_load_trained_model_restores_the_weights(tmp_path):
    model = make_run(tmp_path)
    loaded, config = run_dir.load_trained_model(str(tmp_path))
    assert config == CONFIG
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
