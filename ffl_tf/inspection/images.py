"""Image files given to the inspection commands, decoded exactly as a run's evaluation decodes its images."""

import functools
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from ffl_tf.data import ops_image
from ffl_tf.data.image_folder import IMAGE_EXTENSIONS
from ffl_tf.data.tfds_sources import SMALL_IMAGE_SIZE


def image_files(paths: Sequence[str]) -> list[str]:
    """`paths` with every folder replaced by its .png/.jpg/.jpeg files (recursively, sorted).

    Raises ValueError naming a path that does not exist or a folder without images.
    """
    files = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = sorted(
                os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"{path} holds no {'/'.join(IMAGE_EXTENSIONS)} files (searched recursively).")
            files += found
        else:
            raise ValueError(f"{path} does not exist. Pass image files or folders of images.")
    return files


def eval_decoder(image_shape: Sequence[int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """path -> the uint8 image the run's evaluation pipeline makes of that file (usable in tf.data maps).

    Small images (up to SMALL_IMAGE_SIZE, cached by the pipelines) are resized whole, larger ones
    centre-cropped, as `image_folder` sources decide.
    """
    size, channels = image_shape[0], image_shape[-1]
    return functools.partial(ops_image.decode_file_for_eval, size=size, crop=size > SMALL_IMAGE_SIZE, channels=channels)


def decode_image(path: str, image_shape: Sequence[int]) -> np.ndarray:
    """The uint8 [height, width, channels] image the run's evaluation pipeline would make of this file."""
    return eval_decoder(image_shape)(path).numpy()


def load_images(paths: Sequence[str], image_shape: Sequence[int]) -> tuple[np.ndarray, list[str], list[str]]:
    """(images [N, ...] uint8, the N files decoded, the files that could not be decoded) of the image files
    and folders in `paths` (`image_files`), decoded as the run's evaluation does.

    Raises ValueError when no file can be decoded (or a path does not exist, or a folder holds no images).
    """
    files = image_files(paths)
    images, decoded, bad = [], [], []
    for path in files:
        try:
            images.append(decode_image(path, image_shape))
            decoded.append(path)
        except tf.errors.OpError:  # unreadable, not an image, or truncated
            bad.append(path)
    if not decoded:
        raise ValueError(f"None of the {len(files)} files can be decoded as an image: {', '.join(files[:5])}.")
    return np.stack(images), decoded, bad


def report_skipped(program: str, bad: Sequence[str]) -> None:
    """One line on stderr naming the files `load_images` could not decode, if any."""
    if bad:
        print(f"{program}: skipped {len(bad)} file(s) that cannot be decoded as images: {', '.join(bad)}",
              file=sys.stderr)
