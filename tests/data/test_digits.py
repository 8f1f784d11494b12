"""The embedded digits dataset, prepared for real, and the training stream's determinism."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ffl_tf import data
from ffl_tf.data import digits
from tests.data.images import batches, crops, examples


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_digits_builder_is_ours_and_split_is_fixed(digits_dir):
    builder = tfds.builder("sklearn_digits", data_dir=digits_dir)
    assert isinstance(builder, digits.SklearnDigits)
    splits = digits.split_indices()
    assert (len(splits["train"]), len(splits["test"])) == (1438, 359)
    assert not set(splits["train"]) & set(splits["test"])
    assert list(splits["test"][:5]) == [4, 5, 6, 9, 14]  # Same on every machine (RandomState(0)).


def test_digits_load_prepares_and_matches_sklearn(digits_dir):
    train, eval_, info = data.load("digits", data_dir=digits_dir, batch_size=64, eval_batch_size=500)
    assert tfds.builder("sklearn_digits", data_dir=digits_dir).is_prepared()
    assert (info.num_classes, info.image_shape, info.num_train + info.num_eval) == (10, (8, 8, 1), 1797)
    (eval_images, eval_labels), = batches(eval_)
    assert eval_images.dtype == np.uint8 and eval_images.shape == (359, 8, 8, 1)
    images, labels = digits.load_sklearn_digits()
    test = digits.split_indices()["test"]
    assert images.max() == 255
    assert examples(eval_images, eval_labels) == examples(images[test], labels[test])
    # The hard-coded normalisation constants are the train split's statistics.
    train_pixels = images[digits.split_indices()["train"]].astype(np.float64)
    np.testing.assert_allclose(info.mean, [train_pixels.mean()], atol=0.01)
    np.testing.assert_allclose(info.std, [train_pixels.std()], atol=0.01)


def test_digits_augmentation_shifts_but_never_flips(digits_dir):
    train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=128, eval_batch_size=128, seed=3)
    images, _ = digits.load_sklearn_digits()
    shifted = set().union(*(crops(im, 1, mode="constant", flip=False) for im in images))
    originals = {im.tobytes() for im in images}
    batch, _ = batches(train, 1)[0]
    assert all(image.tobytes() in shifted for image in batch)
    assert sum(image.tobytes() not in originals for image in batch) > 32


def test_train_pipeline_is_reproducible_per_seed(digits_dir):
    def firstbatches(seed):
        train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=32, eval_batch_size=32, seed=seed)
        return np.concatenate([x for x, _ in batches(train, 3)])

    np.testing.assert_array_equal(firstbatches(5), firstbatches(5))
    assert not np.array_equal(firstbatches(5), firstbatches(6))


def test_train_stream_started_at_a_step_is_the_rest_of_the_uninterrupted_stream(digits_dir):
    def stream_from(start_step, count, batch_size=500):
        train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=batch_size, eval_batch_size=32, seed=3,
                                start_step=start_step)
        return batches(train, count)

    stream = stream_from(0, 7)  # 1438 training examples: 7 batches of 500 span three passes over the data
    for start_step in (1, 2, 5):  # in the first pass, straddling passes 0 and 1, in pass 2
        resumed = stream_from(start_step, 2)
        for (images, labels), (expected_images, expected_labels) in zip(resumed, stream[start_step:]):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)
    # Each pass is a fresh permutation of every example: two batches of 719 are one pass.
    passes = [np.concatenate([labels for _, labels in stream_from(0, 4, batch_size=719)[i:i + 2]]) for i in (0, 2)]
    _, all_labels = digits.load_sklearn_digits()
    expected_counts = np.bincount(all_labels[digits.split_indices()["train"]], minlength=10)
    assert all((np.bincount(labels, minlength=10) == expected_counts).all() for labels in passes)
    assert not np.array_equal(*passes)


