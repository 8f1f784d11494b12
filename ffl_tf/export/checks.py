"""Checks of an export command's inputs, run before any work so a mistake costs seconds and says how to fix it."""

import os
from collections.abc import Sequence


class ExportError(Exception):
    """An export that cannot be done as asked; the message names the bad input and the fix."""


def check_head(heads: Sequence[str], head: str, *, of: str = "this run") -> None:
    """Raises ExportError unless `head` is one of `heads`, the heads of a run (or of a model file: `of`)."""
    if head not in heads:
        raise ExportError(f"--head={head} is not a head of {of}; choose one of: {', '.join(heads)}.")


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
