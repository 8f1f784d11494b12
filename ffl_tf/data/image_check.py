"""Finds undecodable image files before training starts, in parallel, remembering what it checked.

Every file is decoded once (JPEGs at 1/8 scale, which still reads all their data, so a truncated file
fails) by a parallel tf.data map. The verdicts are kept in a cache file per data directory, keyed by
path, size and modification time, so a second run checks only new or changed files.
"""

import hashlib
import json
import os

import tensorflow as tf
from absl import logging

from ffl_tf.utils import atomic

# How many bad paths an error message lists.
SHOWN = 5


def cache_dir() -> str:
    """Where the verdicts are kept: $FFL_TF_CACHE_DIR, else $XDG_CACHE_HOME/ffl_tf, else ~/.cache/ffl_tf."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("FFL_TF_CACHE_DIR") or os.path.join(root, "ffl_tf")


def bad_images(data_dir: str, paths: list[str]) -> list[str]:
    """The paths among `paths` that cannot be decoded as images, in their given order."""
    cache_path = os.path.join(cache_dir(), "image_check", hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()
                              + ".json")
    cached = _read_cache(cache_path)
    stamps = {path: _stamp(path) for path in paths}
    unchecked = [path for path in paths if cached.get(path, [None])[:2] != stamps[path]]
    if unchecked:
        logging.info("Checking %d image files in %s (once; the result is cached)", len(unchecked), data_dir)
        good = _decodable(unchecked)
        cached.update({path: [*stamps[path], path in good] for path in unchecked})
        try:
            atomic.write_json(cache_path, cached)
        except OSError as error:  # A read-only home only costs the check again next time.
            logging.warning("Could not cache the image check in %s: %s", cache_path, error)
    return [path for path in paths if not cached[path][2]]


def describe(bad: list[str], data_dir: str, *, fix: bool = True) -> str:
    """One line: how many files are bad, the first few, and (with `fix`) what to do."""
    shown = ", ".join(bad[:SHOWN]) + (f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
    line = f"image_folder: {len(bad)} image file{'s' if len(bad) > 1 else ''} in {data_dir} cannot be decoded: {shown}."
    if fix:
        line += " Fix: replace or delete them, or pass --skip_bad_images to train without them."
    return line


def _stamp(path: str) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _decodable(paths: list[str]) -> set[str]:
    """The paths that decode as PNG/JPEG/BMP/GIF images; decoding errors only drop their element."""

    def check(path):
        contents = tf.io.read_file(path)
        height = tf.cond(
            tf.io.is_jpeg(contents),
            lambda: tf.shape(tf.io.decode_jpeg(contents, channels=3, ratio=8))[0],
            lambda: tf.shape(tf.io.decode_image(contents, channels=3, expand_animations=False))[0],
        )
        return path, height

    checked = tf.data.Dataset.from_tensor_slices(paths).map(check, num_parallel_calls=tf.data.AUTOTUNE)
    return {path.decode() for path, height in checked.ignore_errors().as_numpy_iterator() if height > 0}
