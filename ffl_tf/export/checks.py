"""Checks of an export command's inputs, run before any work so a mistake costs seconds and says how to fix it."""

import os

from ffl_tf.runs.config import RunConfig


class ExportError(Exception):
    """An export that cannot be done as asked; the message names the bad input and the fix."""


def check_head(config: RunConfig, head: str) -> None:
    valid = config.heads()
    if head not in valid:
        raise ExportError(f"--head={head} is not a head of this run; choose one of: {', '.join(valid)}.")


def check_writable_dir(path: str, flag: str) -> None:
    """Raises ExportError unless `path` is, or could be created as, a directory we can write into."""
    _check_creatable(path, path, flag)


def check_writable_file(path: str, flag: str) -> None:
    """Raises ExportError unless a file could be written (or replaced) at `path`."""
    if os.path.isdir(path):
        raise ExportError(f"--{flag}={path} is a directory; pass a file name such as {path.rstrip('/')}/model.tflite.")
    _check_creatable(os.path.dirname(os.path.abspath(path)), path, flag)


def _check_creatable(directory: str, value: str, flag: str) -> None:
    """Whether `directory` exists or could be made: its nearest existing ancestor is a writable directory."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ExportError(
            f"--{flag}={value} cannot be written: {existing} is not a directory. Choose another --{flag}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"--{flag}={value} cannot be written: {existing} is not writable. Choose another --{flag}.")
