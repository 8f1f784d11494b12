"""image_folder: the shared CIFAR-10 sample and generated folders."""

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import data
from tests.data.images import CIFAR10_ORDER, COLOURS, batches, crops, write_png

# --- Real images: the shared CIFAR-10 sample as an image folder. ---


@pytest.mark.real_images
def test_image_folder_sample_classes_sizes_and_pixels(cifar10_sample):
    info = data.dataset_info("image_folder", data_dir=str(cifar10_sample))
    assert info.class_names == CIFAR10_ORDER and info.num_classes == 10
    assert info.image_shape == (32, 32, 3)
    # round(0.2 * 5085) = 1017 held out.
    assert (info.num_train, info.num_eval) == (4068, 1017)

    train, eval_, loaded_info = data.load(
        "image_folder", data_dir=str(cifar10_sample), batch_size=64, eval_batch_size=100
    )
    assert loaded_info == info
    images, labels = next(iter(train))
    assert images.shape == (64, 32, 32, 3) and images.dtype == tf.uint8 and labels.dtype == tf.int32
    _, _, eval_files, _ = data.image_folder_files(str(cifar10_sample))
    first_images, first_labels = next(iter(eval_))
    expected = np.stack([tf.io.decode_png(tf.io.read_file(p)).numpy() for p, _ in eval_files[:100]])
    np.testing.assert_array_equal(first_images.numpy(), expected)
    np.testing.assert_array_equal(first_labels.numpy(), [label for _, label in eval_files[:100]])


# --- Generated images: the folder of 5,100 coloured squares (tests/conftest.py: squares_folder). ---


def test_image_folder_hold_out_is_seeded_and_listing_order_independent(squares_folder, monkeypatch):
    root = str(squares_folder)
    classes, train, eval_, dropped = data.image_folder_files(root, validation_fraction=0.2, seed=0)
    assert classes == tuple(COLOURS) and dropped == 0
    assert data.image_folder_files(root, validation_fraction=0.2, seed=0) == (classes, train, eval_, dropped)
    train_paths, eval_paths = {p for p, _ in train}, {p for p, _ in eval_}
    assert not train_paths & eval_paths
    # round(0.2 * 5100) = 1020 held out.
    assert len(train_paths | eval_paths) == 5100 and len(eval_paths) == 1020
    assert {p for p, _ in data.image_folder_files(root, seed=1)[2]} != eval_paths
    assert all(p.split("/")[-2] == classes[label] for p, label in train + eval_)

    listdir = tf.io.gfile.listdir
    monkeypatch.setattr(tf.io.gfile, "listdir", lambda path: list(reversed(listdir(path))))
    assert data.image_folder_files(root, validation_fraction=0.2, seed=0) == (classes, train, eval_, dropped)




def test_image_folder_uses_test_split_and_normalises_images(tmp_path):
    rng = np.random.default_rng(0)
    train_images = {
        tmp_path / "train" / "b" / "0.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        tmp_path / "train" / "b" / "1.png": rng.integers(0, 256, (16, 16, 1), dtype=np.uint8),  # Grey-scale.
        tmp_path / "train" / "a" / "0.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
    }
    test_image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for path, image in train_images.items():
        write_png(path, image)
    write_png(tmp_path / "test" / "b" / "x.png", test_image)
    write_png(tmp_path / "test" / "a" / "y.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))  # Resized.

    train, eval_, info = data.load("image_folder", data_dir=str(tmp_path), batch_size=5, eval_batch_size=8)
    assert (info.class_names, info.image_shape, info.num_train, info.num_eval) == (("a", "b"), (16, 16, 3), 3, 2)
    (images, labels), = batches(eval_)
    assert images.shape == (2, 16, 16, 3) and list(labels) == [0, 1]
    np.testing.assert_array_equal(images[1], test_image)

    # Train images are reflect-pad-2 crops (pad = 16 // 8) of the RGB-converted train images.
    sources = [np.broadcast_to(im, (16, 16, 3)) for im in train_images.values()]
    candidates = set().union(*(crops(s, 2) for s in sources))
    for batch, _ in batches(train, 4):
        assert batch.shape == (5, 16, 16, 3)
        assert all(image.tobytes() in candidates for image in batch)



def test_image_folder_rejects_oblong_default_size_and_empty_hold_out(tmp_path):
    for i in range(5):
        write_png(tmp_path / "train" / "a" / f"{i}.png", np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="32x64.*pass image_size"):
        data.dataset_info("image_folder", data_dir=str(tmp_path))
    info = data.dataset_info("image_folder", data_dir=str(tmp_path), image_size=48)
    assert (info.image_shape, info.num_train, info.num_eval) == ((48, 48, 3), 4, 1)
    with pytest.raises(ValueError, match="validation_fraction=0.1 of 5 training images holds out 0"):
        data.dataset_info("image_folder", data_dir=str(tmp_path), image_size=48, validation_fraction=0.1)
