"""Helpers shared by the data tests and others: reading batches, enumerating crops, writing images, and generated
images whose class a network learns in a few dozen steps (squares), also written as an image folder."""

import pathlib

import numpy as np
import tensorflow as tf

CIFAR10_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
# The squares' colours by class, named in sorted order so that an image folder's classes (its sorted sub-folders)
# are numbered as here. Each differs from every other by 85 or more in some channel, and from the noise: no channel
# of the noise exceeds 119, and black is uniform where the noise is not.
COLOURS = {
    "black": (0, 0, 0), "blue": (0, 0, 255), "cyan": (0, 255, 255), "green": (0, 255, 0), "grey": (170, 170, 170),
    "magenta": (255, 0, 255), "orange": (255, 170, 0), "red": (255, 0, 0), "white": (255, 255, 255),
    "yellow": (255, 255, 0),
}


def batches(ds, n=None):
    return [(x.numpy(), y.numpy()) for x, y in (ds.take(n) if n else ds)]


def crops(image, pad, mode="reflect", flip=True):
    """Every output pad_crop_flip may give for `image`, as a set of bytes."""
    height, width, _ = image.shape
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode=mode)
    windows = [padded[y:y + height, x:x + width] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    if flip:
        windows += [w[:, ::-1] for w in windows]
    return {w.tobytes() for w in windows}


def write_png(path: pathlib.Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(image))


def examples(images, labels):
    """The (image, label) pairs as a sorted list, to compare splits regardless of order."""
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))


def squares(n: int, seed: int, *, size: int = 32, classes: str = "corner") -> tuple[np.ndarray, np.ndarray]:
    """`n` noise images (uint8, channels 0-119) with one 8x8 square near a corner, and their int32 labels.

    classes="corner": the class is the corner (CORNERS; the square is white), one class per corner so that each
    class needs evidence of its own rather than the absence of the others'; for explanations that must look at a
    known quadrant. classes="colour": the class is the square's colour (COLOURS) and its corner is random, which
    the training pipeline's random crops and horizontal flips leave intact.
    """
    if classes not in ("corner", "colour"):
        raise ValueError(f"classes={classes!r}: choose 'corner' or 'colour'")
    palette = np.array(list(COLOURS.values()), "uint8")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, size, size, 3)).astype("uint8")
    labels = rng.integers(0, len(CORNERS) if classes == "corner" else len(palette), n).astype("int32")
    for image, label in zip(images, labels):
        dy, dx = rng.integers(0, 3, 2)
        corner = CORNERS[label] if classes == "corner" else CORNERS[rng.integers(0, len(CORNERS))]
        top, left = corner.startswith("top"), corner.endswith("left")
        row = 2 + dy if top else size - 10 - dy
        column = 2 + dx if left else size - 10 - dx
        image[row:row + 8, column:column + 8] = 255 if classes == "corner" else palette[label]
    return images, labels


# The images of the shared generated folder (tests/conftest.py: squares_folder): 1,020 held out (20%), so the export
# tests check int8 accuracy on more than 1,000 images.
SQUARES_FOLDER_IMAGES = 5100


def write_squares_folder(root: pathlib.Path, n: int = SQUARES_FOLDER_IMAGES, seed: int = 0,
                         size: int = 32) -> pathlib.Path:
    """`n` coloured squares (`squares(classes="colour")`) as the image folder `root`/train/<colour>/<i>.png."""
    images, labels = squares(n, seed, size=size, classes="colour")
    names = list(COLOURS)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_png(root / "train" / names[label] / f"{i}.png", image)
    return root
