"""One training run per model_dir: a second run is refused, an ended run's lock taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO

from tf_pacseg.training import run_lock
from tf_pacseg.training.run_lock import RunLock, RunLockedError

_HOLD = """
import sys, time
from tf_pacseg.training.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/model, until the test ends or kills it."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.fspath(REPO), os.environ.get("PYTHONPATH", "")])
    )
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "model"), "--marker=first-run"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_holder(model_dir, pid, host, age_seconds=0.0):
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, run_lock.LOCK_FILE_NAME)
    holder = {"pid": pid, "host": host, "started": "earlier", "command": "python train.py"}
    with open(path, "w") as f:
        json.dump(holder, f)
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def _lock_file_holder(model_dir):
    with open(os.path.join(model_dir, run_lock.LOCK_FILE_NAME)) as f:
        text = f.read()
    return json.loads(text) if text else {}


def test_a_second_run_is_refused_naming_the_first(tmp_path, holder):
    model_dir = str(tmp_path / "model")
    with pytest.raises(RunLockedError) as raised:
        RunLock(model_dir).acquire()
    message = str(raised.value)
    assert f"holds model_dir {model_dir!r}: pid {holder.pid} on host {socket.gethostname()}" in (
        message
    )
    assert "--marker=first-run" in message and "started 20" in message
    assert "another --model_dir" in message and "heartbeat" not in message
    assert raised.value.holder["pid"] == holder.pid
    assert _lock_file_holder(model_dir)["pid"] == holder.pid  # Left as it was.


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    caplog.set_level("WARNING", logger="absl")
    holder.kill()
    holder.wait()
    model_dir = str(tmp_path / "model")
    with RunLock(model_dir):
        assert _lock_file_holder(model_dir)["pid"] == os.getpid()
    assert "Taking over the run lock" in caplog.text
    assert f"pid {holder.pid} on host {socket.gethostname()}" in caplog.text
    assert "--marker=first-run" in caplog.text


def test_a_released_lock_is_free_and_taken_without_warning(tmp_path, caplog):
    caplog.set_level("WARNING", logger="absl")
    model_dir = str(tmp_path / "model")
    for _ in range(2):
        with RunLock(model_dir):
            assert _lock_file_holder(model_dir)["command"].endswith(" ".join(sys.argv[1:]))
        assert _lock_file_holder(model_dir) == {}
    assert "Taking over" not in caplog.text


def test_one_process_cannot_hold_a_model_dir_twice(tmp_path):
    with RunLock(str(tmp_path)):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
            RunLock(str(tmp_path)).acquire()


def test_a_fresh_holder_on_another_host_is_refused_even_with_the_os_lock_free(tmp_path):
    # A network file system may lock only within each host: the heartbeat decides.
    _write_holder(tmp_path, 4242, "other-host", age_seconds=30)
    with pytest.raises(RunLockedError, match=r"pid 4242 on host other-host.* heartbeat was 3\d s"):
        RunLock(str(tmp_path), stale_after_seconds=600).acquire()


def test_a_holder_on_another_host_without_heartbeat_is_taken_over(tmp_path, caplog):
    caplog.set_level("WARNING", logger="absl")
    _write_holder(tmp_path, 4242, "other-host", age_seconds=700)
    with RunLock(str(tmp_path), stale_after_seconds=600):
        assert _lock_file_holder(tmp_path)["pid"] == os.getpid()
    assert "pid 4242 on host other-host" in caplog.text


@pytest.mark.parametrize("alive", [True, False])
def test_without_os_locks_a_holder_on_this_host_is_judged_by_its_pid(tmp_path, monkeypatch, alive):
    monkeypatch.setattr(run_lock, "fcntl", None)
    pid = os.getppid() if alive else _dead_pid()
    _write_holder(tmp_path, pid, socket.gethostname(), age_seconds=3600)
    lock = RunLock(str(tmp_path))
    if alive:
        with pytest.raises(RunLockedError, match=f"pid {pid} on host"):
            lock.acquire()
    else:
        with lock:
            assert _lock_file_holder(tmp_path)["pid"] == os.getpid()


def test_an_unreadable_lock_file_with_the_os_lock_free_is_taken_over(tmp_path):
    (tmp_path / run_lock.LOCK_FILE_NAME).write_bytes(b"\xff garbage")
    with RunLock(str(tmp_path)):
        assert _lock_file_holder(tmp_path)["pid"] == os.getpid()


def test_the_holder_touches_the_lock_file_as_a_heartbeat(tmp_path):
    path = tmp_path / run_lock.LOCK_FILE_NAME
    with RunLock(str(tmp_path), heartbeat_seconds=0.05):
        os.utime(path, (0, 0))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5


def test_clear_model_dir_keeps_only_the_held_lock(tmp_path):
    (tmp_path / "ckpt-1.npz").write_bytes(b"x")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "events").write_bytes(b"x")
    with RunLock(str(tmp_path)) as lock:
        lock.clear_model_dir()
        assert os.listdir(tmp_path) == [run_lock.LOCK_FILE_NAME]
        with pytest.raises(RunLockedError):
            RunLock(str(tmp_path)).acquire()
