"""train.py holds its model_dir: a second run there is refused at once, naming the first.

The first run also shows the start-up clean-up: what a killed save left in
model_dir (our temporaries only) is gone once it holds the lock.
"""

import json
import os
import signal
import subprocess
import sys
import time

from helpers import REPO, make_records
from training_runs import TINY_TRAIN_FLAGS

from tf_pacseg.training import run_lock

_TRAIN = os.path.join(REPO, "train.py")
_TINY_FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--epochs_per_eval=0",
]
_KILLED_SAVES = ["ckpt-7_temp/part-00000-of-00001.index", ".model.json.0123abcd.tmp"]
_NOT_OURS = ["notes_temp/a.txt", "notes.tmp"]


def _holder_pid(lock_path):
    try:
        with open(lock_path, encoding="utf-8") as f:
            return json.load(f).get("pid")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_for_lock(process, lock_path, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _holder_pid(lock_path) == process.pid:
            return
        assert process.poll() is None, process.communicate()[0][-5000:]
        time.sleep(0.2)
    raise AssertionError(f"{lock_path} never named pid {process.pid}")


def test_a_second_train_py_on_a_live_model_dir_is_refused_naming_the_first(tmp_path):
    records = make_records(str(tmp_path))
    model_dir = tmp_path / "model"
    for name in _KILLED_SAVES + _NOT_OURS:
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_bytes(b"x")
    flags = [*_TINY_FLAGS, f"--data_dir={records}", f"--model_dir={model_dir}"]
    lock_path = os.path.join(model_dir, run_lock.LOCK_FILE_NAME)
    # Enough steps to outlive the second run.
    first = subprocess.Popen(
        [sys.executable, _TRAIN, *flags, "--max_iter=100000", "--train_epochs=100000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_lock(first, lock_path)
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, _TRAIN, *flags, "--max_iter=1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        refused_after = time.monotonic() - started
        assert first.poll() is None  # Untouched by the second.
        first.send_signal(signal.SIGTERM)
        first_log = first.communicate(timeout=300)[0]
    finally:
        first.kill()
    assert second.returncode == 1, second.stderr[-5000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train.py: Another training run holds model_dir {str(model_dir)!r}: ")
    assert f"pid {first.pid} on host " in last and "--max_iter=100000" in last
    assert "Traceback" not in second.stderr
    # Refused before building the model or reading the records (TensorFlow's import
    # and start-up alone take seconds on a loaded machine).
    assert "Training resnet_v1_50" not in second.stderr
    assert refused_after < 120
    assert first.returncode == 128 + signal.SIGTERM, first_log[-5000:]
    assert "Deleted what an interrupted save left in " in first_log
    left = {
        os.path.relpath(os.path.join(root, name), model_dir)
        for root, _, names in os.walk(model_dir)
        for name in names
    }
    assert not left & set(_KILLED_SAVES) and set(_NOT_OURS) <= left
    assert _holder_pid(lock_path) is None  # Released: the file is empty again.
