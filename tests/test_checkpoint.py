"""Checkpoints: atomic per-epoch files, pruning, and a restore that brings the optimizer back."""

import keras
import numpy as np

from ffl_tf import checkpoint
from ffl_tf.ffl_model import build_ffl_model


def trained_model(steps: int = 2):
    model = build_ffl_model(["resnet8", "resnet8"], 10, (8, 8, 3), shared_stages=1)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), steps_per_epoch=2, run_eagerly=True)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.train_on_batch(rng.integers(0, 256, (4, 8, 8, 3)).astype("uint8"), rng.integers(0, 10, 4))
    return model


def test_latest_ignores_partial_and_foreign_files(tmp_path):
    assert checkpoint.latest(str(tmp_path / "missing")) is None
    for name in ("epoch-0002.weights.h5", "epoch-0010.weights.h5", ".tmp-x-epoch-0011.weights.h5", "notes.txt"):
        (tmp_path / name).write_text("")
    assert checkpoint.latest(str(tmp_path)) == (10, str(tmp_path / "epoch-0010.weights.h5"))


def test_save_keeps_the_newest_and_restore_brings_back_the_optimizer(tmp_path):
    model = trained_model()
    for epoch in range(1, 5):
        checkpoint.save(model, str(tmp_path), epoch, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.weights.h5", "epoch-0004.weights.h5"]

    fresh = build_ffl_model(["resnet8", "resnet8"], 10, (8, 8, 3), shared_stages=1)
    fresh.compile(keras.optimizers.SGD(0.1, momentum=0.9), steps_per_epoch=2)
    checkpoint.restore(fresh, checkpoint.latest(str(tmp_path))[1])
    assert int(fresh.optimizer.iterations.numpy()) == 2
    momenta = lambda m: [v.numpy() for v in m.optimizer.variables if "momentum" in v.path]  # noqa: E731
    assert any(np.abs(v).max() > 0 for v in momenta(model))
    for a, b in zip(momenta(model), momenta(fresh)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_epoch_checkpoint_saves_every_n_epochs_and_the_last(tmp_path):
    callback = checkpoint.EpochCheckpoint(str(tmp_path), epochs=5, every=2, keep=10)
    callback.set_model(trained_model(1))
    for epoch in range(5):
        callback.on_epoch_end(epoch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0002.weights.h5", "epoch-0004.weights.h5", "epoch-0005.weights.h5"
    ]


def test_non_chief_workers_write_nothing_to_the_run(tmp_path):
    callback = checkpoint.EpochCheckpoint(str(tmp_path), epochs=1, is_chief=False)
    callback.set_model(trained_model(1))
    callback.on_epoch_end(0)
    assert list(tmp_path.iterdir()) == []
