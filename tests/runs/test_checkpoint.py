"""Checkpoints: atomic files per epoch and mid-epoch, pruning, a restore that brings the optimizer back, and
damaged files moved aside."""

import keras
import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.runs import checkpoint


def compiled_model():
    model = build_ffl_model(["resnet8", "resnet8"], 10, (8, 8, 3), shared_stages=1)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=2,
                  rampup_epochs=1.0, weight_decay=1e-4, run_eagerly=True)
    return model


def trained_model(steps: int = 2):
    model = compiled_model()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.train_on_batch(rng.integers(0, 256, (4, 8, 8, 3)).astype("uint8"), rng.integers(0, 10, 4))
    return model


def test_latest_ignores_partial_and_foreign_files(tmp_path):
    assert checkpoint.latest(str(tmp_path / "missing")) is None
    for name in ("epoch-0002.weights.h5", "epoch-0010.weights.h5", ".tmp-x-epoch-0011.weights.h5", "notes.txt",
                 "epoch-0010-step-000005.weights.h5", "epoch-0009-step-000100.weights.h5",
                 "epoch-0012.weights.h5.corrupt"):
        (tmp_path / name).write_text("")
    assert checkpoint.latest(str(tmp_path)) == ((10, 5), str(tmp_path / "epoch-0010-step-000005.weights.h5"))
    assert [position for position, _ in checkpoint.all_checkpoints(str(tmp_path))] == [(2, 0), (9, 100), (10, 0),
                                                                                         (10, 5)]


def test_save_keeps_the_newest_and_restore_brings_back_the_optimizer(tmp_path):
    model = trained_model()
    for epoch in range(1, 5):
        checkpoint.save(model, str(tmp_path), epoch, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.weights.h5", "epoch-0004.weights.h5"]

    fresh = compiled_model()
    checkpoint.restore(fresh, checkpoint.latest(str(tmp_path))[1])
    assert int(fresh.optimizer.iterations.numpy()) == 2
    def momenta(m):
        return [v.numpy() for v in m.optimizer.variables if "momentum" in v.path]

    assert any(np.abs(v).max() > 0 for v in momenta(model))
    for a, b in zip(momenta(model), momenta(fresh)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mid_epoch_checkpoints_older_than_an_epoch_end_are_pruned(tmp_path):
    model = trained_model(1)
    for epoch, step in [(0, 3), (0, 6), (1, 0), (1, 2), (1, 4)]:
        checkpoint.save(model, str(tmp_path), epoch, step, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0001-step-000002.weights.h5", "epoch-0001-step-000004.weights.h5", "epoch-0001.weights.h5"
    ]
    checkpoint.save(model, str(tmp_path), 2, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.weights.h5", "epoch-0002.weights.h5"]


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(tmp_path):
    model = trained_model(2)
    checkpoint.save(model, str(tmp_path), 1)
    good_weights = [w.numpy() for w in model.weights]
    checkpoint.save(trained_model(3), str(tmp_path), 2)
    newest = tmp_path / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:1000])  # an interrupted copy

    fresh = compiled_model()
    assert checkpoint.restore_newest(fresh, str(tmp_path)) == ((1, 0), str(tmp_path / "epoch-0001.weights.h5"))
    for a, b in zip(good_weights, fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert (tmp_path / "epoch-0002.weights.h5.corrupt").exists() and not newest.exists()


def test_no_readable_checkpoint_stops_with_their_names(tmp_path):
    (tmp_path / "epoch-0001.weights.h5").write_text("not hdf5")
    with pytest.raises(checkpoint.CheckpointError, match=r"No checkpoint in .* can be read \(epoch-0001.weights.h5"):
        checkpoint.restore_newest(compiled_model(), str(tmp_path), move_aside=False)
    assert (tmp_path / "epoch-0001.weights.h5").exists()  # left in place without move_aside
    assert checkpoint.restore_newest(compiled_model(), str(tmp_path / "empty")) is None
