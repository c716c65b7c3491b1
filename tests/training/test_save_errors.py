"""A full or unwritable disk stops a save with one line; nothing half-written stays behind.

Each writer of a save (the checkpoint of either engine, model.weights.h5,
model.json, the export) is made to fail part-way, after writing some bytes,
as a full disk makes it fail: the save raises `SaveError` naming the path,
the bytes it needs and the free space; the previous checkpoint, weights and
architecture stay whole and loadable, and no temporary file or folder is
left. The JAX engine's save runs in a subprocess (KERAS_BACKEND=jax). Where
the OS lets this user mount a small tmpfs in a private namespace (`unshare`),
real full and read-only disks are tried too.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, make_records, run_python
from training_runs import tiny_config

from tf_pacseg import files
from tf_pacseg.training import checkpoints
from tf_pacseg.training.engine import create_engine
from tf_pacseg.weights import saving

_ENOSPC = os.strerror(errno.ENOSPC)
_SAVED_ONCE = {
    "checkpoint",
    "ckpt-1.index",
    "ckpt-1.data-00000-of-00001",
    "model.weights.h5",
    "model.json",
}


def _write_part(path, size=4096):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\0" * size)


def _disk_full(path):
    return OSError(errno.ENOSPC, _ENOSPC, path)


@pytest.fixture
def saved_once(tmp_path):
    """A TensorFlow engine (tiny model) that saved step 1 in tmp_path/model."""
    keras.backend.clear_session()
    model_dir = str(tmp_path / "model")
    engine = create_engine(tiny_config(str(tmp_path / "unused"), model_dir))
    engine.build()
    engine.save(1, 1)
    assert set(os.listdir(model_dir)) == _SAVED_ONCE
    return engine


def _assert_one_line_naming(error, what, path):
    message = str(error.value)
    assert "\n" not in message
    assert error.value.errno == errno.ENOSPC
    assert f"Could not save {what} to {path}: {_ENOSPC} (it needs about " in message
    assert f"{os.path.dirname(path)} has " in message and " free)" in message
    assert "run the same command again to resume" in message


def _assert_step_1_intact(engine):
    model_dir = engine.config.model_dir
    assert set(os.listdir(model_dir)) == _SAVED_ONCE
    assert os.path.basename(tf.train.latest_checkpoint(model_dir)) == "ckpt-1"
    assert os.path.basename(engine.restore().path) == "ckpt-1"
    weights_path = os.path.join(model_dir, "model.weights.h5")
    assert saving.read_model_description(weights_path)["step"] == 1
    assert len(saving.load_model(model_dir).weights) == len(engine.model.weights)


def test_a_tensorflow_checkpoint_that_fails_part_way_leaves_the_previous_one(
    saved_once, monkeypatch
):
    checkpoint = saved_once.checkpointer.checkpoint
    prefix = os.path.join(saved_once.config.model_dir, "ckpt-2")

    def shards_part_way(file_prefix, options=None):
        shard = f"{file_prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate1"
        _write_part(shard)
        # What TensorFlow raises there: the errno's text ends the message.
        raise tf.errors.ResourceExhaustedError(None, None, f"{shard}; {_ENOSPC}")

    monkeypatch.setattr(checkpoint, "_write", shards_part_way)
    with pytest.raises(files.SaveError) as error:
        saved_once.save(2, 2)
    _assert_one_line_naming(error, "the checkpoint of step 2", prefix)
    _assert_step_1_intact(saved_once)


def test_a_checkpoint_written_but_not_recorded_is_removed(saved_once, monkeypatch):
    from tensorflow.python.lib.io import file_io

    def state_part_way(filename, contents):
        _write_part(filename, size=10)
        raise _disk_full(filename)

    # The shards are merged into ckpt-2.*; writing the `checkpoint` state file fails.
    monkeypatch.setattr(file_io, "write_string_to_file", state_part_way)
    with pytest.raises(files.SaveError) as error:
        saved_once.save(2, 2)
    prefix = os.path.join(saved_once.config.model_dir, "ckpt-2")
    _assert_one_line_naming(error, "the checkpoint of step 2", prefix)
    _assert_step_1_intact(saved_once)


def test_weights_that_fail_part_way_leave_the_previous_weights(saved_once, monkeypatch):
    def weights_part_way(path, *args, **kwargs):
        _write_part(path)
        raise _disk_full(path)

    monkeypatch.setattr(saved_once.model, "save_weights", weights_part_way)
    with pytest.raises(files.SaveError) as error:
        saved_once.save(2, 2)
    model_dir = saved_once.config.model_dir
    weights_path = os.path.join(model_dir, "model.weights.h5")
    _assert_one_line_naming(error, "model.weights.h5 and model.json", weights_path)
    # The checkpoint of step 2 was written before: training resumes there.
    assert os.path.basename(tf.train.latest_checkpoint(model_dir)) == "ckpt-2"
    assert set(os.listdir(model_dir)) == _SAVED_ONCE | {
        "ckpt-2.index",
        "ckpt-2.data-00000-of-00001",
    }
    assert saving.read_model_description(os.path.join(model_dir, "model.weights.h5"))["step"] == 1
    saving.load_model(model_dir)


def test_an_architecture_file_that_fails_part_way_leaves_the_previous_pair(saved_once, monkeypatch):
    def json_part_way(obj, f, **kwargs):
        f.write('{"format": ')
        f.flush()
        raise _disk_full(f.name)

    monkeypatch.setattr(json, "dump", json_part_way)
    with pytest.raises(files.SaveError):
        saved_once.save(2, 2)
    model_dir = saved_once.config.model_dir
    assert "ckpt-2.index" in os.listdir(model_dir)
    assert set(os.listdir(model_dir)) - {"ckpt-2.index", "ckpt-2.data-00000-of-00001"} == (
        _SAVED_ONCE
    )
    assert saving.read_model_description(os.path.join(model_dir, "model.weights.h5"))["step"] == 1
    saving.load_model(model_dir)


def test_a_disk_without_room_refuses_the_save_before_writing(saved_once, monkeypatch):
    usage = shutil.disk_usage(saved_once.config.model_dir)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage._replace(free=3_000_000))
    with pytest.raises(files.SaveError) as error:
        saved_once.save(2, 2)
    message = str(error.value)
    assert "Could not save the checkpoint of step 2 and model.weights.h5 to " in message
    assert "has 3.0 MB free" in message
    # The checkpoint (weights and momentum) and model.weights.h5, of float32 weights.
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in saved_once.model.weights)
    needed = float(message.split("it needs about ")[1].split(" MB")[0]) * 1e6
    assert 2 * weight_bytes < needed < 4 * weight_bytes
    _assert_step_1_intact(saved_once)


def test_an_export_that_fails_part_way_leaves_the_previous_export(saved_once, monkeypatch):
    export_dir = os.path.join(saved_once.config.model_dir, "export")
    assert saved_once.export(export_dir)
    before = sorted(os.listdir(export_dir))

    def export_part_way(archive, path, *args, **kwargs):
        _write_part(os.path.join(path, "variables", "variables.data-00000-of-00001"))
        raise _disk_full(path)

    # The backend's archive class (keras.export.ExportArchive makes one of it).
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", export_part_way)
    with pytest.raises(files.SaveError, match="Could not save the inference SavedModel to "):
        saved_once.export(export_dir)
    assert set(os.listdir(saved_once.config.model_dir)) == _SAVED_ONCE | {"export"}
    assert sorted(os.listdir(export_dir)) == before
    tf.saved_model.load(export_dir)


def test_what_killed_saves_left_is_removed_and_nothing_else(tmp_path):
    ours = [
        "ckpt-12_temp/part-00000-of-00001.data-00000-of-00001.tempstate3",
        "checkpoint.tmp0123456789abcdef0123456789abcdef",
        ".ckpt-12.npz.0a1b2c3d.tmp",
        ".model.json.89abcdef.tmp",
        "model.partial.weights.h5",
        ".export.partial/saved_model.pb",
    ]
    theirs = [
        "ckpt-12.index",
        "ckpt-12.data-00000-of-00001",
        "ckpt-3.npz",
        "checkpoint",
        "model.weights.h5",
        "model.json",
        "run.lock",
        "notes_temp/a.txt",
        "ckpt-x_temp/a.txt",
        "checkpoint.tmp-mine",
        ".data.json.0a1b2c3d.tmp",
        ".model.json.0a1b2c3d.tmp.bak",
        "my.partial.weights.h5",
        "export/saved_model.pb",
        "train/events.out.tfevents.1",
    ]
    for name in ours + theirs:
        _write_part(str(tmp_path / name), size=1)
    removed = checkpoints.remove_unfinished_saves(str(tmp_path))
    assert removed == sorted(name.split("/")[0] for name in ours)
    left = {
        os.path.relpath(os.path.join(root, name), tmp_path)
        for root, _, names in os.walk(tmp_path)
        for name in names
    }
    assert left == set(theirs)


_JAX_SAVES = textwrap.dedent(
    """
    import errno, json, os, sys
    import keras, numpy as np
    from tf_pacseg import files
    from tf_pacseg.training import TrainConfig
    from tf_pacseg.training.engine import create_engine

    model_dir = sys.argv[1]
    config = TrainConfig(**json.loads(sys.argv[2]), model_dir=model_dir)
    engine = create_engine(config)
    engine.build()
    engine.save(1, 1)
    saved_once = sorted(os.listdir(model_dir))
    results = {"backend": keras.backend.backend(), "saved_once": saved_once}
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def npz_part_way(f, **arrays):
        f.write(b"PK" + b"\\0" * 4096)
        raise full

    real_savez = np.savez
    np.savez = npz_part_way
    try:
        engine.save(2, 2)
    except files.SaveError as error:
        results["checkpoint"] = str(error)
    np.savez = real_savez
    results["after_checkpoint"] = sorted(os.listdir(model_dir))
    results["restored"] = os.path.basename(engine.restore().path)

    def export_part_way(archive, path, *args, **kwargs):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"\\0" * 4096)
        raise full

    type(keras.export.ExportArchive()).write_out = export_part_way
    try:
        engine.export(os.path.join(model_dir, "export"))
    except files.SaveError as error:
        results["export"] = str(error)
    results["after_export"] = sorted(os.listdir(model_dir))
    print(json.dumps(results))
    """
)


def test_the_jax_engine_s_failed_saves_leave_the_previous_checkpoint(tmp_path):
    model_dir = tmp_path / "model"
    settings = dict(
        num_gpu=0,
        base_architecture="resnet_v1_50",
        units_per_block=[1, 1, 1, 1],
        num_classes=5,
        batch_size=2,
        input_height=33,
        input_width=33,
        pre_trained_model="",
        data_dir=str(tmp_path / "unused"),
    )
    process = run_python(_JAX_SAVES, [model_dir, json.dumps(settings)], backend="jax")
    results = json.loads(process.stdout.strip().splitlines()[-1])
    assert results["backend"] == "jax"
    assert results["saved_once"] == ["ckpt-1.npz", "model.json", "model.weights.h5"]
    message = results["checkpoint"]
    assert "\n" not in message
    assert f"Could not save the checkpoint of step 2 to {model_dir / 'ckpt-2.npz'}: " in message
    assert f"{_ENOSPC} (it needs about " in message and f"{model_dir} has " in message
    assert results["after_checkpoint"] == results["saved_once"]
    assert results["restored"] == "ckpt-1.npz"
    # Not the warning of an export the JAX model cannot give: the run stops.
    assert results["export"].startswith(f"Could not save the inference SavedModel to {model_dir}")
    assert results["after_export"] == results["saved_once"]


def _private_tmpfs_command(mounts, command):
    """`command` (a list) in a private mount namespace with a tmpfs of each size at each path.

    None where this user may not make one (`unshare -rm`: user namespaces).
    """
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return None
    script = " && ".join(f"mount -t tmpfs -o size={size} tmpfs {path}" for path, size in mounts)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, timeout=60)
    if probe.returncode != 0:
        return None
    return ["unshare", "-rm", "sh", "-c", f'{script} && exec "$@"', "sh", *command]


_REAL_DISKS = textwrap.dedent(
    """
    import errno, json, os, subprocess, sys
    from tf_pacseg import files
    from tf_pacseg.training import TrainConfig
    from tf_pacseg.training.engine import create_engine

    small, large, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    results = {}
    check_free_space = files.check_free_space
    # Not checked before: the writer itself runs into the full disk.
    files.check_free_space = lambda *args, **kwargs: None
    engine = create_engine(TrainConfig(**settings, model_dir=small))
    engine.build()
    try:
        engine.save(1, 1)
    except files.SaveError as error:
        results["full"] = [error.errno, str(error)]
    results["full_left"] = sorted(os.listdir(small))
    files.check_free_space = check_free_space

    engine = create_engine(TrainConfig(**settings, model_dir=large))
    engine.build()
    engine.save(1, 1)
    results["saved_once"] = sorted(os.listdir(large))
    subprocess.run(["mount", "-o", "remount,ro", large], check=True)
    try:
        engine.save(2, 2)
    except files.SaveError as error:
        results["read_only"] = [error.errno, str(error)]
    results["read_only_left"] = sorted(os.listdir(large))
    results["restored"] = os.path.basename(engine.restore().path)
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_real_full_and_read_only_disks_stop_the_save_cleanly(tmp_path, backend):
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    settings = dict(
        num_gpu=0,
        base_architecture="resnet_v1_50",
        units_per_block=[1, 1, 1, 1],
        num_classes=5,
        batch_size=2,
        input_height=33,
        input_width=33,
        pre_trained_model="",
        data_dir=str(tmp_path / "unused"),
    )
    # The tiny model's checkpoint is ~110 MB, its model.weights.h5 ~55 MB.
    command = _private_tmpfs_command(
        [(small, "64m"), (large, "400m")],
        [sys.executable, "-c", _REAL_DISKS, str(small), str(large), json.dumps(settings)],
    )
    if command is None:
        pytest.skip("cannot mount a private tmpfs here (unshare -rm)")
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    process = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(process.stdout.strip().splitlines()[-1])
    code, message = results["full"]
    assert code == errno.ENOSPC
    assert f"Could not save the checkpoint of step 1 to {small}" in message
    assert f"{_ENOSPC} (it needs about " in message and f"{small} has " in message
    assert results["full_left"] == []
    code, message = results["read_only"]
    assert code == errno.EROFS
    assert f"Could not save the checkpoint of step 2 to {large}" in message
    assert os.strerror(errno.EROFS) in message
    assert results["read_only_left"] == results["saved_once"]
    assert results["restored"] in ("ckpt-1", "ckpt-1.npz")


def test_train_py_on_a_full_disk_stops_with_one_line(tmp_path):
    records = make_records(str(tmp_path))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    train = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        "--num_gpu=0",
        "--base_architecture=resnet_v1_50",
        "--units_per_block=1,1,1,1",
        "--num_classes=5",
        "--batch_size=2",
        "--input_height=33",
        "--input_width=33",
        "--pre_trained_model=",
        f"--data_dir={records}",
        f"--model_dir={model_dir}",
        "--max_iter=2",
        "--save_checkpoints_steps=1",
        "--epochs_per_eval=0",
    ]
    # Room for the lock and the summaries, not for the first checkpoint.
    command = _private_tmpfs_command(
        [(model_dir, "16m")], ["sh", "-c", '"$@"; echo "exit $?"; ls -A "$0"', model_dir, *train]
    )
    if command is None:
        pytest.skip("cannot mount a private tmpfs here (unshare -rm)")
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = process.stdout.strip().splitlines()
    assert "exit 1" in lines, process.stderr[-3000:]
    assert lines[lines.index("exit 1") + 1 :] == ["run.lock", "train"]
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"train.py: Could not save the checkpoint of step 1 and model.weights.h5 to "
        f"{model_dir / 'ckpt-1'}: {_ENOSPC} (it needs about "
    )
    assert f"{model_dir} has " in last and "run the same command again to resume" in last
    assert "Traceback" not in process.stderr
