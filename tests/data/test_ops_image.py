"""Image ops: CIFAR- and ImageNet-style augmentation and centre crops."""

import numpy as np
import tensorflow as tf

from ffl_tf import data
from tests.data.images import crops

# --- Augmentation functions. ---


def test_pad_crop_flip_is_a_crop_of_the_reflect_padded_image_and_varies():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    candidates = crops(image, 4)
    assert len(candidates) == 81 * 2
    outputs = [data.pad_crop_flip(tf.constant(image), tf.constant([s, 7]), pad=4).numpy() for s in range(40)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outputs)
    assert all(o.tobytes() in candidates for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 20
    assert any(o.tobytes() in crops(image[:, ::-1], 4, flip=False) for o in outputs)  # Some are flipped...
    assert any(o.tobytes() in crops(image, 4, flip=False) for o in outputs)  # ...and some not.
    again = data.pad_crop_flip(tf.constant(image), tf.constant([3, 7]), pad=4).numpy()
    np.testing.assert_array_equal(again, outputs[3])


def test_pad_crop_without_flip_never_mirrors():
    image = np.random.default_rng(1).integers(1, 256, (8, 8, 1), dtype=np.uint8)
    allowed = crops(image, 1, mode="constant", flip=False)
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

