"""One training run per model_dir: `RunLock`, held by a run from start to end.

Two runs in one model_dir would overwrite each other's checkpoints and
summaries. The lock is an OS lock (`fcntl.flock`) on `<model_dir>/run.lock`,
which the OS drops when its process ends, however it ends; the file holds
the holder's pid, host, start time and command, for the message that
refuses a second run, and its modification time is the holder's heartbeat.

A lock whose holder has ended is taken over, with a warning. On file
systems without OS locks (and on Windows), and for a holder on another host
(a network file system may lock only within one host), the holder counts as
ended when it is on this host and its pid is gone, or when its heartbeat is
older than `stale_after_seconds`; there, two runs started in the same
instant could both start.

Evaluation and prediction do not take the lock: they may read a model_dir
while it trains.

Example:

```python
with RunLock("model"):
    ...  # Train; a second RunLock("model") meanwhile raises RunLockedError.
```
"""

import datetime
import errno
import json
import os
import shlex
import shutil
import socket
import sys
import threading
import time

from absl import logging

from tf_pacseg import checks

try:
    import fcntl
except ImportError:  # Windows: the holder's details and heartbeat decide alone.
    fcntl = None

LOCK_FILE_NAME = "run.lock"
# flock errors of file systems that do not support it.
_NO_OS_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLockedError(RuntimeError):
    """Another run holds the model_dir; `holder` is its details (a dict, maybe empty)."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


def _this_process():
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def describe_holder(holder):
    """`pid 123 on host h, started 2026-..., command: python train.py ...`."""
    if not holder:
        return "a process that has not written its details yet"
    if "host" not in holder:
        return "a process whose details cannot be read"
    return (
        f"pid {holder.get('pid')} on host {holder['host']}, started "
        f"{holder.get('started')}, command: {holder.get('command')}"
    )


def _pid_alive(pid):
    if os.name != "posix":
        return True  # No safe probe (os.kill(pid, 0) ends the process on Windows).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, under another user.
        return True
    return True


def _os_lock(fd):
    """True: locked; False: the file system has no OS locks; None: another process holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    except OSError as error:
        if error.errno in _NO_OS_LOCKS:
            return False
        raise
    return True


def _read_holder(fd):
    """The details in the lock file: `{}` when empty (free), without "host" if unreadable."""
    size = os.fstat(fd).st_size
    try:
        holder = json.loads(os.pread(fd, size, 0).decode("utf-8")) if size else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        holder = None
    return holder if isinstance(holder, dict) else {"unreadable": size}


class RunLock:
    """Holds `<model_dir>/run.lock` for one training run; a context manager.

    Args:
        model_dir: str. The run's folder (created if needed).
        stale_after_seconds: float. A holder this long without a heartbeat,
            when the OS cannot tell, counts as ended. Defaults to 600.
        heartbeat_seconds: float. How often the holder touches the lock
            file. Defaults to 60.

    Raises (on entering):
        RunLockedError: another live run holds the lock; the message names it.
    """

    def __init__(self, model_dir, stale_after_seconds=600.0, heartbeat_seconds=60.0):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE_NAME)
        self.stale_after_seconds = checks.positive_number(
            "stale_after_seconds", stale_after_seconds
        )
        self.heartbeat_seconds = checks.positive_number("heartbeat_seconds", heartbeat_seconds)
        self._fd = None
        self._stop = threading.Event()
        self._heartbeat = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def acquire(self):
        """Takes the lock, or raises `RunLockedError` naming the run that holds it."""
        if self._fd is not None:
            raise RuntimeError(f"This RunLock already holds {self.path}.")
        os.makedirs(self.model_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os_locked = _os_lock(fd)
            holder = _read_holder(fd)
            if os_locked is None or (holder and not self._ended(holder, fd, os_locked)):
                raise RunLockedError(self._refusal(holder, fd, os_locked), holder)
            if holder:
                logging.warning(
                    "Taking over the run lock %s: its holder (%s) ended without releasing it.",
                    self.path,
                    describe_holder(holder),
                )
            details = json.dumps(_this_process()).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, details, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # Also drops the OS lock, if taken.
            raise
        self._fd = fd
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name="run-lock-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def release(self):
        """Empties the lock file (marks it free) and drops the OS lock; idempotent."""
        if self._fd is None:
            return
        self._stop.set()
        self._heartbeat.join()
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)
            self._fd = None

    def clear_model_dir(self):
        """Deletes everything in model_dir but the lock file (`--clean_model_dir`).

        Deleting the whole folder would delete the lock file too, and a run
        started then would lock a new file beside the held one.
        """
        if self._fd is None:
            raise RuntimeError(f"Take the lock {self.path} before clearing its model_dir.")
        for entry in os.scandir(self.model_dir):
            if entry.name == LOCK_FILE_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)

    def _beat(self):
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                os.utime(self.path)
            except OSError as error:  # A missed beat only risks a takeover later.
                logging.warning("Could not touch the run lock %s: %s", self.path, error)

    def _heartbeat_age(self, fd):
        return time.time() - os.fstat(fd).st_mtime

    def _ended(self, holder, fd, os_locked):
        """Whether the holder in the file has ended, though the OS lock is free or absent."""
        host, pid = holder.get("host"), holder.get("pid")
        if host is None and os_locked:
            return True  # Unreadable details, and no process holds the OS lock.
        if host == socket.gethostname() and isinstance(pid, int):
            # This host's OS lock was free: its holder has ended.
            return os_locked or not _pid_alive(pid)
        return self._heartbeat_age(fd) > self.stale_after_seconds

    def _refusal(self, holder, fd, os_locked):
        message = (
            f"Another training run holds model_dir {self.model_dir!r}: {describe_holder(holder)}. "
            "Two runs in one model_dir would overwrite each other's checkpoints: wait for it "
            "to end or stop it, or train into another --model_dir (evaluating and predicting "
            "from this one are fine meanwhile)."
        )
        if os_locked is not None:  # Judged by its heartbeat, not by the OS.
            age = self._heartbeat_age(fd)
            message += (
                f" Its last heartbeat was {age:.0f} s ago; it counts as ended after "
                f"{self.stale_after_seconds:.0f} s (or delete {self.path} if it has ended)."
            )
        return message
