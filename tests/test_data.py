"""Input pipelines: tfds paths (mocked CIFAR/ImageNet, real sklearn digits), image folders, augmentation, offline errors."""

import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ffl_tf import data
from ffl_tf import digits_dataset

CIFAR10_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _batches(ds, n=None):
    return [(x.numpy(), y.numpy()) for x, y in (ds.take(n) if n else ds)]


def _crops(image, pad, mode="reflect", flip=True):
    """Every output pad_crop_flip may give for `image`, as a set of bytes."""
    height, width, _ = image.shape
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode=mode)
    windows = [padded[y:y + height, x:x + width] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    if flip:
        windows += [w[:, ::-1] for w in windows]
    return {w.tobytes() for w in windows}


# --- Augmentation functions. ---


def test_pad_crop_flip_is_a_crop_of_the_reflect_padded_image_and_varies():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    candidates = _crops(image, 4)
    assert len(candidates) == 81 * 2
    outputs = [data.pad_crop_flip(tf.constant(image), tf.constant([s, 7]), pad=4).numpy() for s in range(40)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outputs)
    assert all(o.tobytes() in candidates for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 20
    assert any(o.tobytes() in _crops(image[:, ::-1], 4, flip=False) for o in outputs)  # Some are flipped...
    assert any(o.tobytes() in _crops(image, 4, flip=False) for o in outputs)  # ...and some not.
    again = data.pad_crop_flip(tf.constant(image), tf.constant([3, 7]), pad=4).numpy()
    np.testing.assert_array_equal(again, outputs[3])


def test_pad_crop_without_flip_never_mirrors():
    image = np.random.default_rng(1).integers(1, 256, (8, 8, 1), dtype=np.uint8)
    allowed = _crops(image, 1, mode="constant", flip=False)
    for s in range(30):
        out = data.pad_crop_flip(tf.constant(image), tf.constant([s, 0]), pad=1, pad_mode="CONSTANT", flip=False)
        assert out.numpy().tobytes() in allowed


def test_center_crop_takes_the_central_224_of_256():
    image = np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8)
    out = data.center_crop(tf.constant(image), size=224).numpy()
    np.testing.assert_array_equal(out, image[16:240, 38:262])  # Shorter side 256 -> 224 window, no resampling.
    jpeg = tf.io.encode_jpeg(image)
    window = tf.image.decode_and_crop_jpeg(jpeg, [16, 38, 224, 224], channels=3).numpy()
    np.testing.assert_array_equal(data.center_crop(jpeg, size=224, jpeg=True).numpy(), window)
    assert data.center_crop(jpeg, size=64, jpeg=True).shape == (64, 64, 3)


def test_inception_crop_shape_determinism_and_variety():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    outs = [data.inception_crop(image, tf.constant([s, 1]), size=48).numpy() for s in range(6)]
    assert all(o.shape == (48, 48, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == 6
    np.testing.assert_array_equal(data.inception_crop(image, tf.constant([2, 1]), size=48).numpy(), outs[2])


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
    train_batches = _batches(train, 8)
    assert [x.shape[0] for x, _ in train_batches] == [4] * 8
    assert all(((y >= 0) & (y < 10)).all() for _, y in train_batches)
    # Every train image is a reflect-pad-4 crop (maybe flipped) of a source image; not all are unchanged.
    candidates = set().union(*(_crops(r, 4) for r in raw))
    train_images = np.concatenate([x for x, _ in train_batches])
    assert all(x.tobytes() in candidates for x in train_images)
    assert not all(x.tobytes() in {r.tobytes() for r in raw} for x in train_images)
    # Eval: batches of 3 with the short last one kept, images exactly the decoded ones.
    eval_batches = _batches(eval_)
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
        assert [x.shape for x, _ in _batches(train, 3)] == [(2, 224, 224, 3)] * 3
        assert [x.shape for x, _ in _batches(eval_)] == [(4, 224, 224, 3), (1, 224, 224, 3)]
        resumed, _, _ = data.load("imagenet2012", data_dir=str(tmp_path), batch_size=2, eval_batch_size=4,
                                  start_step=3)  # a fresh shuffle, not a replay: it only has to run
        assert [x.shape for x, _ in _batches(resumed, 2)] == [(2, 224, 224, 3)] * 2


# --- Real images: the shared CIFAR-10 sample as an image folder. ---


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
    _, _, eval_files = data.image_folder_files(str(cifar10_sample))
    first_images, first_labels = next(iter(eval_))
    expected = np.stack([tf.io.decode_png(tf.io.read_file(p)).numpy() for p, _ in eval_files[:100]])
    np.testing.assert_array_equal(first_images.numpy(), expected)
    np.testing.assert_array_equal(first_labels.numpy(), [label for _, label in eval_files[:100]])


def test_image_folder_hold_out_is_seeded_and_listing_order_independent(cifar10_sample, monkeypatch):
    root = str(cifar10_sample)
    classes, train, eval_ = data.image_folder_files(root, validation_fraction=0.2, seed=0)
    assert classes == CIFAR10_ORDER
    assert data.image_folder_files(root, validation_fraction=0.2, seed=0) == (classes, train, eval_)
    train_paths, eval_paths = {p for p, _ in train}, {p for p, _ in eval_}
    assert not train_paths & eval_paths
    assert len(train_paths | eval_paths) == 5085 and len(eval_paths) == 1017
    assert {p for p, _ in data.image_folder_files(root, seed=1)[2]} != eval_paths
    assert all(p.split("/")[-2] == classes[label] for p, label in train + eval_)

    listdir = tf.io.gfile.listdir
    monkeypatch.setattr(tf.io.gfile, "listdir", lambda path: list(reversed(listdir(path))))
    assert data.image_folder_files(root, validation_fraction=0.2, seed=0) == (classes, train, eval_)


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def test_image_folder_uses_test_split_and_normalises_images(tmp_path):
    rng = np.random.default_rng(0)
    train_images = {
        tmp_path / "train" / "b" / "0.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        tmp_path / "train" / "b" / "1.png": rng.integers(0, 256, (16, 16, 1), dtype=np.uint8),  # Grey-scale.
        tmp_path / "train" / "a" / "0.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
    }
    test_image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for path, image in train_images.items():
        _write_png(path, image)
    _write_png(tmp_path / "test" / "b" / "x.png", test_image)
    _write_png(tmp_path / "test" / "a" / "y.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))  # Resized.

    train, eval_, info = data.load("image_folder", data_dir=str(tmp_path), batch_size=5, eval_batch_size=8)
    assert (info.class_names, info.image_shape, info.num_train, info.num_eval) == (("a", "b"), (16, 16, 3), 3, 2)
    (images, labels), = _batches(eval_)
    assert images.shape == (2, 16, 16, 3) and list(labels) == [0, 1]
    np.testing.assert_array_equal(images[1], test_image)

    # Train images are reflect-pad-2 crops (pad = 16 // 8) of the RGB-converted train images.
    sources = [np.broadcast_to(im, (16, 16, 3)) for im in train_images.values()]
    candidates = set().union(*(_crops(s, 2) for s in sources))
    for batch, _ in _batches(train, 4):
        assert batch.shape == (5, 16, 16, 3)
        assert all(image.tobytes() in candidates for image in batch)


# --- The embedded digits dataset, prepared for real. ---


def _examples(images, labels):
    """The (image, label) pairs as a sorted list, to compare splits regardless of order."""
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_digits_builder_is_ours_and_split_is_fixed(digits_dir):
    builder = tfds.builder("sklearn_digits", data_dir=digits_dir)
    assert isinstance(builder, digits_dataset.SklearnDigits)
    splits = digits_dataset.split_indices()
    assert (len(splits["train"]), len(splits["test"])) == (1438, 359)
    assert not set(splits["train"]) & set(splits["test"])
    assert list(splits["test"][:5]) == [4, 5, 6, 9, 14]  # Same on every machine (RandomState(0)).


def test_digits_load_prepares_and_matches_sklearn(digits_dir):
    train, eval_, info = data.load("digits", data_dir=digits_dir, batch_size=64, eval_batch_size=500)
    assert tfds.builder("sklearn_digits", data_dir=digits_dir).is_prepared()
    assert (info.num_classes, info.image_shape, info.num_train + info.num_eval) == (10, (8, 8, 1), 1797)
    (eval_images, eval_labels), = _batches(eval_)
    assert eval_images.dtype == np.uint8 and eval_images.shape == (359, 8, 8, 1)
    images, labels = digits_dataset.load_sklearn_digits()
    test = digits_dataset.split_indices()["test"]
    assert images.max() == 255
    assert _examples(eval_images, eval_labels) == _examples(images[test], labels[test])
    # The hard-coded normalisation constants are the train split's statistics.
    train_pixels = images[digits_dataset.split_indices()["train"]].astype(np.float64)
    np.testing.assert_allclose(info.mean, [train_pixels.mean()], atol=0.01)
    np.testing.assert_allclose(info.std, [train_pixels.std()], atol=0.01)


def test_digits_augmentation_shifts_but_never_flips(digits_dir):
    train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=128, eval_batch_size=128, seed=3)
    images, _ = digits_dataset.load_sklearn_digits()
    shifted = set().union(*(_crops(im, 1, mode="constant", flip=False) for im in images))
    originals = {im.tobytes() for im in images}
    batch, _ = _batches(train, 1)[0]
    assert all(image.tobytes() in shifted for image in batch)
    assert sum(image.tobytes() not in originals for image in batch) > 32


def test_train_pipeline_is_reproducible_per_seed(digits_dir):
    def first_batches(seed):
        train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=32, eval_batch_size=32, seed=seed)
        return np.concatenate([x for x, _ in _batches(train, 3)])

    np.testing.assert_array_equal(first_batches(5), first_batches(5))
    assert not np.array_equal(first_batches(5), first_batches(6))


def test_train_stream_started_at_a_step_is_the_rest_of_the_uninterrupted_stream(digits_dir):
    def batches(start_step, count, batch_size=500):
        train, _, _ = data.load("digits", data_dir=digits_dir, batch_size=batch_size, eval_batch_size=32, seed=3,
                                start_step=start_step)
        return _batches(train, count)

    stream = batches(0, 7)  # 1438 training examples: 7 batches of 500 span three passes over the data
    for start_step in (1, 2, 5):  # in the first pass, straddling passes 0 and 1, in pass 2
        for (images, labels), (expected_images, expected_labels) in zip(batches(start_step, 2), stream[start_step:]):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)
    # Each pass is a fresh permutation of every example: two batches of 719 are one pass.
    passes = [np.concatenate([labels for _, labels in batches(0, 4, batch_size=719)[i:i + 2]]) for i in (0, 2)]
    _, all_labels = digits_dataset.load_sklearn_digits()
    expected_counts = np.bincount(all_labels[digits_dataset.split_indices()["train"]], minlength=10)
    assert all((np.bincount(labels, minlength=10) == expected_counts).all() for labels in passes)
    assert not np.array_equal(*passes)


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
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        data.dataset_info("mnist")
    with pytest.raises(ValueError, match="image_size=64"):
        data.dataset_info("cifar10", image_size=64)


def test_image_folder_rejects_oblong_default_size_and_empty_hold_out(tmp_path):
    for i in range(5):
        _write_png(tmp_path / "train" / "a" / f"{i}.png", np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="32x64.*pass image_size"):
        data.dataset_info("image_folder", data_dir=str(tmp_path))
    info = data.dataset_info("image_folder", data_dir=str(tmp_path), image_size=48)
    assert (info.image_shape, info.num_train, info.num_eval) == ((48, 48, 3), 4, 1)
    with pytest.raises(ValueError, match="validation_fraction=0.1 of 5 training images holds out 0"):
        data.dataset_info("image_folder", data_dir=str(tmp_path), image_size=48, validation_fraction=0.1)
