"""Crash-safe file writing: nothing half-written ever carries a final name.

Also `SaveError`, the one-line report of a save that a full or unwritable
disk stopped (`check_free_space`, `reporting_disk_errors`).
"""

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat

# Write errors that more room, or a writable folder, would have avoided.
_DISK_ERRNOS = tuple(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    )
    if code is not None
)

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


@contextlib.contextmanager
def removed_on_failure(*paths):
    """Removes the files or folders `paths` if the block raises: a failed writer's partial output.

    Args:
        *paths: str. What the block writes before renaming it to its final name.
    """
    try:
        yield
    except BaseException:
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
        raise


def temporary_names(name_pattern):
    """The names `atomic_write` and `temporary_path` give the temporaries of `name_pattern`.

    Args:
        name_pattern: str. A regular expression of the final names.

    Returns:
        A compiled regular expression, to `fullmatch` against names in a folder.
    """
    return re.compile(rf"\.(?:{name_pattern})\.(?:[0-9a-f]{{8}}\.tmp|partial)")


class SaveError(OSError):
    """A save that a full or unwritable disk stopped (or would stop).

    Its message is one line for the user: what was being saved, where, the
    bytes it needs where known, and the free space. `errno` is the failure's
    (ENOSPC when the space was checked before writing).
    """


def disk_errno(error):
    """The errno of `error` when a full or unwritable disk caused it, else None.

    Python and h5py set `errno`; TensorFlow's file errors only end their
    message with its text ("...; No space left on device").
    """
    code = getattr(error, "errno", None)
    if code in _DISK_ERRNOS:
        return code
    message = str(error)
    return next((code for code in _DISK_ERRNOS if os.strerror(code) in message), None)


def free_bytes(path):
    """(folder, its disk's free bytes) for `path`, or its nearest folder that exists."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder, shutil.disk_usage(folder).free


def format_bytes(count):
    """`123 B`, `4.5 kB`, `67.8 MB`, `9.1 GB`, `2.0 TB` (powers of 1000, as `df -H`)."""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while count >= 1000 and power < len(units) - 1:
        count /= 1000
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


def _save_error(code, what, path, needed, advice):
    folder, free = free_bytes(path)
    needs = f"it needs about {format_bytes(needed)} and " if needed else ""
    message = (
        f"Could not save {what} to {path}: {os.strerror(code)} ({needs}{folder} has "
        f"{format_bytes(free)} free)."
    )
    error = SaveError(" ".join(filter(None, (message, advice))))
    error.errno = code
    return error


def check_free_space(what, path, needed, advice=""):
    """Raises `SaveError` before writing when the disk of `path` has less than `needed` bytes.

    Args:
        what: str. What is saved, for the message (e.g. "the checkpoint of step 5").
        path: str. Where.
        needed: int. Bytes the save will write.
        advice: str. What to do, appended to the message. Defaults to "".
    """
    if free_bytes(path)[1] < needed:
        raise _save_error(errno.ENOSPC, what, path, needed, advice)


@contextlib.contextmanager
def reporting_disk_errors(what, path, needed=None, advice=""):
    """Raises a write error of a full or unwritable disk again as a `SaveError`.

    Other errors pass unchanged. Args as in `check_free_space` (`needed` may
    be None: not known).
    """
    try:
        yield
    except SaveError:
        raise
    except Exception as error:
        code = disk_errno(error)
        if code is None:
            raise
        raise _save_error(code, what, path, needed, advice) from error
