"""Crash-safe file writing: nothing half-written ever carries a final name."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Opens a temporary file beside `path`, renamed onto `path` only on success.

    An exception (or a kill) inside the block leaves `path` untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def temporary_path(path):
    """A sibling name for writers that need a path, not a file object (rename when done)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.partial")
