"""Crash-safe file writing: nothing half-written ever carries a final name."""

import contextlib
import os
import secrets
import stat

# Flags of a file created by `open(path, "xb")`, not following a link at the name.
_CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
)


def _create_beside(path):
    """Creates a new file with a unique hidden name beside `path`; returns (fd, its path).

    The file gets the permissions a plain `open(path, "w")` would give it:
    `path`'s own if it exists, else mode 0666 less the umask (and the
    directory's default ACL), both applied by the OS at creation. Passing
    0666 to `os.open`, rather than reading the umask, avoids
    `os.umask`'s set-and-restore, which races with other threads; `tempfile`
    creates its files 0600, which others sharing the run could not read.
    """
    directory, name = os.path.split(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    for _ in range(100):
        tmp_path = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp_path, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            os.chmod(tmp_path, mode)
        return fd, tmp_path
    raise FileExistsError(f"No free temporary name beside {path!r} after 100 tries.")


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Opens a temporary file beside `path`, renamed onto `path` only on success.

    An exception (or a kill) inside the block leaves `path` untouched. The
    file ends with the permissions a plain `open(path, mode)` would give it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = _create_beside(path)
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
