"""The run's callbacks: checkpoints per epoch, per N steps and on a stop request; the headline progress bar."""

import logging

import keras
import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.runs import callbacks, preemption
from tests.runs.test_checkpoint import trained_model


class Signalled:
    """A StopRequest stand-in whose signal arrives when the test says so."""

    def __init__(self):
        self.signalled = False

    def requested(self):
        return self.signalled


def names(path):
    return sorted(p.name for p in path.iterdir())


def test_checkpoints_every_n_epochs_and_the_last(tmp_path):
    callback = callbacks.Checkpoints(str(tmp_path), epochs=5, steps_per_epoch=4, every=2, keep=10)
    callback.set_model(trained_model(1))
    for epoch in range(5):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch)
    assert names(tmp_path) == ["epoch-0002.weights.h5", "epoch-0004.weights.h5", "epoch-0005.weights.h5"]


def test_checkpoints_every_n_steps_within_an_epoch_only(tmp_path):
    callback = callbacks.Checkpoints(str(tmp_path), epochs=2, steps_per_epoch=6, every_steps=2, keep=10)
    callback.set_model(trained_model(1))
    callback.on_epoch_begin(0)
    for batch in range(6):
        callback.on_train_batch_end(batch)
    # Steps 2 and 4 mid-epoch; step 6 is the epoch's end, saved by on_epoch_end after its logs.
    assert names(tmp_path) == ["epoch-0000-step-000002.weights.h5", "epoch-0000-step-000004.weights.h5"]


def test_a_stop_request_checkpoints_at_the_next_step_and_ends_the_run(tmp_path):
    stop = Signalled()
    # A resumed epoch: 3 of its 10 steps were done before this fit.
    callback = callbacks.Checkpoints(str(tmp_path), epochs=4, steps_per_epoch=10, stop=stop, step_offset=3)
    callback.set_model(trained_model(1))
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0)
    assert names(tmp_path) == []
    stop.signalled = True
    with pytest.raises(preemption.Preempted, match="at step 5 of 10 of epoch 2"):
        callback.on_train_batch_end(1)
    assert names(tmp_path) == ["epoch-0001-step-000005.weights.h5"]


def test_a_stop_request_at_an_epoch_end_saves_that_epoch(tmp_path):
    stop = Signalled()
    callback = callbacks.Checkpoints(str(tmp_path), epochs=4, steps_per_epoch=2, every=3, stop=stop)
    callback.set_model(trained_model(1))
    callback.on_epoch_begin(0)
    stop.signalled = True
    callback.on_train_batch_end(1)  # the last step: left to the epoch's end
    with pytest.raises(preemption.Preempted, match="after epoch 1"):
        callback.on_epoch_end(0)
    assert names(tmp_path) == ["epoch-0001.weights.h5"]


def test_non_chief_workers_write_nothing_to_the_run(tmp_path):
    callback = callbacks.Checkpoints(str(tmp_path), epochs=1, steps_per_epoch=1, is_chief=False)
    callback.set_model(trained_model(1))
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0)
    assert list(tmp_path.iterdir()) == []


def test_headline_progbar_shows_the_headline_numbers_only():
    shown = callbacks.HeadlineProgbar()._headline({"loss": 1.0, "ce_fused": 2.0, "acc_fused": 0.5,
                                                    "val_acc_fused": 0.4, "val_kd_weight": 1.0})
    assert shown == {"loss": 1.0, "acc_fused": 0.5, "val_acc_fused": 0.4}


def test_a_run_built_to_stall_warns_once_naming_the_setting_that_helps(caplog):
    """DML (T = 1, no ramp-up) on random labels: the training cross-entropy falls as the networks memorise, while
    evaluation stays at chance, below twice chance after 3 epochs."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 8, 8, 3)).astype("uint8"), rng.integers(0, 10, 64).astype("int32")
    model = methods.get("dml").build(["resnet8", "resnet8"], 10, (8, 8, 3), shared_stages=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), distillation_loss=methods.loss_fn("dml"),
                  steps_per_epoch=4, rampup_epochs=0.0, weight_decay=1e-4)
    hint = "try --rampup_epochs=2"
    with caplog.at_level(logging.WARNING):
        history = model.fit(images, labels, batch_size=16, epochs=5, validation_data=(images[::-1], labels),
                            callbacks=[callbacks.StallWarning(10, hint)], verbose=0, shuffle=False).history
    assert history["ce_branches"][-1] < history["ce_branches"][0]
    warnings = [r.getMessage() for r in caplog.records if "stalling" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith(hint) and "after epoch 3" in warnings[0]


def test_a_learning_run_does_not_warn(caplog):
    callback = callbacks.StallWarning(10, "hint")
    with caplog.at_level(logging.WARNING):
        for epoch, (cross_entropy, accuracy) in enumerate([(4.6, 0.15), (4.0, 0.19), (3.5, 0.25), (3.0, 0.4)]):
            callback.on_epoch_end(epoch, {"ce_branches": cross_entropy, "val_acc_branch_mean": accuracy})
    assert not [r for r in caplog.records if "stalling" in r.getMessage()]
