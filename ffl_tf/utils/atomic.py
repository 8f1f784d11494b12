"""Atomic writes: a reader sees the old file (or directory) or the complete new one, never a half-written one."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str, *, is_dir: bool = False) -> Iterator[str]:
    """Yields a temporary sibling of `path` to write; renames it onto `path` only if the block succeeds.

    A directory is renamed only if `path` does not exist (rename cannot replace a non-empty directory).
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # The temporary name ends like `path`, so writers that check the extension (.weights.h5) accept it.
    suffix = f"-{os.path.basename(path)}"
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=".tmp-", suffix=suffix, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=parent)
        os.close(fd)
    try:
        yield tmp
        if not is_dir:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        # mkstemp/mkdtemp create owner-only entries; give the result the usual permissions instead.
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
