"""Any tfds image-classification dataset by name, through the real tfds calls under tfds.testing.mock_data."""

import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ffl_tf import data
from tests.data.images import batches


def test_tf_flowers_variable_size_images_become_224_crops(tmp_path):
    with tfds.testing.mock_data(num_examples=6):  # random-size JPEGs, no test split in tf_flowers
        train, eval_, info = data.load("tf_flowers", data_dir=str(tmp_path), batch_size=2, eval_batch_size=4)
        assert info.class_names == ("dandelion", "daisy", "tulips", "sunflowers", "roses")
        assert (info.num_classes, info.image_shape) == (5, (224, 224, 3))
        assert info.mean == data.tfds_sources.IMAGENET_MEAN  # unknown statistics: ImageNet's
        assert [x.shape for x, _ in batches(train, 3)] == [(2, 224, 224, 3)] * 3
        assert all(x.shape[1:] == (224, 224, 3) for x, _ in batches(eval_))


def test_image_size_and_grey_scale_images(tmp_path):
    with tfds.testing.mock_data(num_examples=9):  # mnist: fixed 28x28x1 images, a test split
        train, eval_, info = data.load("mnist", data_dir=str(tmp_path), batch_size=3, eval_batch_size=5)
        assert (info.image_shape, info.num_train, info.num_eval) == ((28, 28, 3), 9, 9)  # native size, RGB
        images, labels = next(iter(train))
        assert images.shape == (3, 28, 28, 3) and labels.dtype == tf.int32
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey expanded to three equal channels
        _, _, resized = data.load("mnist", data_dir=str(tmp_path), batch_size=3, eval_batch_size=5, image_size=16)
        assert resized.image_shape == (16, 16, 3)


def test_a_dataset_without_image_and_label_is_refused_saying_what_it_has(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="glue/cola is not an image-classification dataset: .*"
                       "it has .*'sentence'"):
        data.dataset_info("glue/cola", data_dir=str(tmp_path))


def test_unprepared_and_offline_fails_within_seconds_with_the_fix(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.dataset_info("tf_flowers", data_dir=str(tmp_path), download=True)
    assert time.monotonic() - start < 20
    message = str(error.value)
    assert "tf_flowers is not prepared" in message and "tfds build tf_flowers --data_dir=DIR" in message
    assert "unreachable" in message
