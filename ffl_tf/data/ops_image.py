"""Image ops of the input pipelines: decoding, CIFAR- and ImageNet-style augmentation, centre crops.

Augmentations are stateless: `seed` is an int [2] tensor, so an image's augmentation depends only on it.
"""

import tensorflow as tf

# Eval crop: the central 224/256 of the shorter side, i.e. "resize to 256, crop 224".
CENTER_CROP_FRACTION = 224 / 256


def pad_crop_flip(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    pad: int,
    pad_mode: str = "REFLECT",
    flip: bool = True,
) -> tf.Tensor:
    """CIFAR-style augmentation: pad by `pad`, crop back to the input size, maybe flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=pad_mode)
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    cropped = tf.ensure_shape(cropped, image.shape)
    if flip:
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)
    return cropped


def inception_crop(
    data: tf.Tensor,
    seed: tf.Tensor,
    *,
    size: int,
    jpeg: bool = False,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Random-resized crop to [size, size, 3] of a decoded image, or of JPEG bytes if `jpeg`.

    With `jpeg`, only the crop window is decoded, which is much cheaper than decoding the whole photo.
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        _image_shape(data, jpeg),
        bounding_boxes=tf.zeros([0, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    return resize_uint8(_crop(data, begin, crop_size, jpeg), size)


def inception_crop_flip(data: tf.Tensor, seed: tf.Tensor, *, size: int, jpeg: bool) -> tf.Tensor:
    """ImageNet-style augmentation: a random-resized crop, then maybe a horizontal flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = inception_crop(data, crop_seed, size=size, jpeg=jpeg)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def center_crop(
    data: tf.Tensor,
    *,
    size: int,
    jpeg: bool = False,
    crop_fraction: float = CENTER_CROP_FRACTION,
) -> tf.Tensor:
    """Central square covering `crop_fraction` of the shorter side, resized to [size, size, 3].

    With the default fraction 224/256 this is "resize the shorter side to 256, center-crop 224", up to
    resampling, at a fraction of the cost.
    """
    shape = _image_shape(data, jpeg)
    shorter = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    side = tf.cast(tf.round(crop_fraction * shorter), tf.int32)
    begin = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, 0])
    return resize_uint8(_crop(data, begin, tf.stack([side, side, -1]), jpeg), size)


def _image_shape(data, jpeg):
    return tf.image.extract_jpeg_shape(data) if jpeg else tf.shape(data)


def _crop(data, begin, size, jpeg):
    """Crops [begin, begin + size) ([y, x, 0], [h, w, -1]) of a decoded image or JPEG bytes."""
    if jpeg:
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.image.decode_and_crop_jpeg(data, window, channels=3)
    return tf.slice(data, begin, size)


def resize_uint8(image: tf.Tensor, size: int) -> tf.Tensor:
    """Antialiased bilinear resize to [size, size], rounded back to uint8."""
    resized = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.ensure_shape(tf.saturate_cast(tf.round(resized), tf.uint8), (size, size, 3))


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes a PNG/JPEG/BMP/GIF file to uint8 RGB (grey-scale is expanded)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def decode_file_at_size(path: tf.Tensor, size: int) -> tf.Tensor:
    """Decodes an image file, resizing it to [size, size] (aspect not kept) if it differs."""
    image = decode_file(path)
    is_size = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(is_size, lambda: image, lambda: resize_uint8(image, size))
    return tf.ensure_shape(image, (size, size, 3))


def decode_file_for_eval(path: tf.Tensor | str, *, size: int, crop: bool, channels: int = 3) -> tf.Tensor:
    """Decodes an image file to uint8 [size, size, channels] the way an image folder's evaluation does.

    One image file (to predict, explain or evaluate) then reaches the model exactly as evaluation feeds it:
    crop=False (image folders of small images, cached): the whole image, resized to size x size if it
    differs (`decode_file_at_size`); crop=True (larger images): the central 224/256 of the shorter side,
    resized (`center_crop`). channels=1 (grey-scale models, e.g. digits') converts the result to grey.
    """
    image = center_crop(decode_file(path), size=size) if crop else decode_file_at_size(path, size)
    if channels == 1:
        grey = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
        return tf.saturate_cast(tf.round(grey), tf.uint8)
    return image


def identity(image: tf.Tensor) -> tf.Tensor:
    return image
