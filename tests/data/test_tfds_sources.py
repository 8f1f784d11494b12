"""tfds sources through the real tfds calls (CIFAR and ImageNet under tfds.testing.mock_data), and missing data
failing fast with the fix in the message."""

import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ffl_tf import data
from tests.data.images import CIFAR10_ORDER, batches, crops

# --- CIFAR and ImageNet through the real tfds calls, under tfds.testing.mock_data. ---


def test_cifar10_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        train, eval_, info = data.load("cifar10", data_dir=str(tmp_path), batch_size=4, eval_batch_size=3, seed=0)
        raw = [x.numpy() for x, _ in tfds.load("cifar10", split="test", as_supervised=True)]
        assert data.dataset_info("cifar10", data_dir=str(tmp_path)) == info

    assert info == data.DatasetInfo(
        name="cifar10", num_classes=10, image_shape=(32, 32, 3), mean=(125.3, 123.0, 113.9),
        std=(63.0, 62.1, 66.7), num_train=10, num_eval=10, class_names=CIFAR10_ORDER,
    )
    for ds, batch in ((train, 4), (eval_, None)):
        assert ds.element_spec == (
            tf.TensorSpec((batch, 32, 32, 3), tf.uint8), tf.TensorSpec((batch,), tf.int32)
        )
    # Train repeats forever in full batches (10 examples, batch 4: no short batch at epoch ends).
    train_batches = batches(train, 8)
    assert [x.shape[0] for x, _ in train_batches] == [4] * 8
    assert all(((y >= 0) & (y < 10)).all() for _, y in train_batches)
    # Every train image is a reflect-pad-4 crop (maybe flipped) of a source image; not all are unchanged.
    candidates = set().union(*(crops(r, 4) for r in raw))
    train_images = np.concatenate([x for x, _ in train_batches])
    assert all(x.tobytes() in candidates for x in train_images)
    assert not all(x.tobytes() in {r.tobytes() for r in raw} for x in train_images)
    # Eval: batches of 3 with the short last one kept, images exactly the decoded ones.
    eval_batches = batches(eval_)
    assert [x.shape[0] for x, _ in eval_batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in eval_batches]), np.stack(raw))


def test_cifar100_info_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        info = data.dataset_info("cifar100", data_dir=str(tmp_path))
    assert (info.num_classes, len(info.class_names), info.num_train, info.num_eval) == (100, 100, 7, 7)
    assert info.mean == (129.3, 124.1, 112.4) and info.std == (68.2, 65.4, 70.4)


def test_imagenet_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=5):  # Random-size JPEGs.
        train, eval_, info = data.load("imagenet2012", data_dir=str(tmp_path), batch_size=2, eval_batch_size=4)
        assert (info.num_classes, info.image_shape) == (1000, (224, 224, 3))
        assert train.element_spec[0] == tf.TensorSpec((2, 224, 224, 3), tf.uint8)
        assert [x.shape for x, _ in batches(train, 3)] == [(2, 224, 224, 3)] * 3
        assert [x.shape for x, _ in batches(eval_)] == [(4, 224, 224, 3), (1, 224, 224, 3)]
        resumed, _, _ = data.load("imagenet2012", data_dir=str(tmp_path), batch_size=2, eval_batch_size=4,
                                  start_step=3)  # a fresh shuffle, not a replay: it only has to run
        assert [x.shape for x, _ in batches(resumed, 2)] == [(2, 224, 224, 3)] * 2



# --- Missing data fails fast with the fix in the message. ---


def test_cifar10_missing_offline_fails_fast(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", no_network)  # Hermetic even where network exists.
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("cifar10", data_dir=str(tmp_path), batch_size=8, eval_batch_size=8)
    assert time.monotonic() - start < 20
    message = str(error.value)
    assert "cifar10" in message and "--data_dir" in message and str(tmp_path) in message
    assert "www.cs.toronto.edu" in message
    with pytest.raises(data.DatasetNotFoundError, match="www.cs.toronto.edu:443 is unreachable"):
        data.dataset_info("cifar10", data_dir=str(tmp_path), download=True)


def test_cifar_missing_without_download_and_info_fail_immediately(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError, match="cifar100.*download=False.*--data_dir"):
        data.load("cifar100", data_dir=str(tmp_path), batch_size=8, eval_batch_size=8, download=False)
    with pytest.raises(data.DatasetNotFoundError, match="cifar10"):
        data.dataset_info("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5


def test_image_folder_missing_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DatasetNotFoundError, match=str(missing)):
        data.load("image_folder", data_dir=str(missing), batch_size=8, eval_batch_size=8)
    with pytest.raises(data.DatasetNotFoundError, match="--data_dir"):
        data.dataset_info("image_folder")


def test_imagenet_missing_explains_manual_download(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("imagenet2012", data_dir=str(tmp_path), batch_size=8, eval_batch_size=8)
    message = str(error.value)
    assert str(tmp_path / "downloads" / "manual") in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert "--data_dir" in message

    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / name).touch()
    with pytest.raises(data.DatasetNotFoundError, match="download=True"):
        data.dataset_info("imagenet2012", data_dir=str(tmp_path))


def test_bad_arguments():
    with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset is neither a built-in dataset .* nor a "
                       "tensorflow-datasets name"):
        data.dataset_info("no_such_dataset")
    with pytest.raises(ValueError, match="image_size=64"):
        data.dataset_info("cifar10", image_size=64)


