"""Both engines' checkpoint formats, the lookup of the latest one, and failed saves.

Every save writes a resumable checkpoint (weights, optimizer variables, step,
input position) in `model_dir` (TensorFlow engine: a `tf.train.Checkpoint`,
`ckpt-<step>.index` + data; JAX engine: `ckpt-<step>.npz`) and, on the chief,
`model_dir/model.weights.h5` + `model.json` (read by evaluate.py and
predict.py on either backend). A save refuses
non-finite weights, so the last good checkpoint survives a diverging run.
The engines reach these through the `engine.Engine` contract.

A full or unwritable disk stops a save with a `files.SaveError` (checked
before writing where the space is known), leaving what the previous saves
wrote intact and no temporary file; `remove_unfinished_saves` deletes those
that a killed save left.
"""

import contextlib
import glob
import math
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

from tf_pacseg import files
from tf_pacseg.files import atomic_write
from tf_pacseg.training import components, distribute
from tf_pacseg.training.config import NonFiniteLossError
from tf_pacseg.training.engine import Restored
from tf_pacseg.weights import saving, sources

CHECKPOINT_NAME = "ckpt"
# What a `files.SaveError` of training adds to its message.
_ADVICE = (
    "Training stopped; what earlier saves wrote is intact. Free some space (or make the "
    "folder writable) and run the same command again to resume."
)
# A saved array's bookkeeping beyond its data (HDF5 headers; measured under 8 kB).
_ARRAY_OVERHEAD_BYTES = 8192


def _size_of(variables):
    """Bytes that saving `variables` writes, about."""
    return sum(
        math.prod(v.shape) * tf.as_dtype(v.dtype).size + _ARRAY_OVERHEAD_BYTES for v in variables
    )


def _unfinished_names(export_name):
    """What saves stopped part-way leave in model_dir: only our writers' temporary names."""
    weights = saving.partial_weights_path(sources.MODEL_STEM + sources.WEIGHTS_SUFFIX)
    return (
        re.compile(rf"{CHECKPOINT_NAME}-\d+_temp"),  # tf.train.Checkpoint's shards, unmerged.
        re.compile(r"checkpoint\.tmp[0-9a-f]{32}"),  # tf.train.CheckpointManager's state file.
        files.temporary_names(
            rf"{CHECKPOINT_NAME}-\d+\.npz|{re.escape(sources.MODEL_STEM)}\.json|"
            + re.escape(export_name)
        ),
        re.compile(re.escape(weights)),
    )


def remove_unfinished_saves(model_dir, export_name="export"):
    """Deletes what saves stopped part-way (killed, or on a full disk) left in `model_dir`.

    Only the temporary names of this package's writers and TensorFlow's
    checkpoint writer are touched; call it while holding the run lock.

    Args:
        model_dir: str.
        export_name: str. The export's folder name in `model_dir`. Defaults to "export".

    Returns:
        list of str. The names deleted.
    """
    patterns = _unfinished_names(export_name)
    removed = []
    for entry in os.scandir(model_dir):
        if not any(p.fullmatch(entry.name) for p in patterns):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError:  # E.g. a read-only disk: the next save will say so.
            continue
        removed.append(entry.name)
    return sorted(removed)


@contextlib.contextmanager
def reporting_save_errors(what, path, model):
    """Around writing `model`'s weights to `path`: a full or unwritable disk raises `SaveError`.

    Checks first for room for the weights. The writers inside leave no
    partial files (`saved_model.write_saved_model`, `BestModel.update`).

    Args:
        what: str. What is saved, for the message.
        path: str. Where.
        model: the Keras model whose weights are written.
    """
    needed = _size_of(model.weights)
    files.check_free_space(what, path, needed, _ADVICE)
    with files.reporting_disk_errors(what, path, needed, _ADVICE):
        yield


def _all_finite(variables):
    floats = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])


def _latest_tf_checkpoint(model_dir):
    """The TensorFlow engine's latest checkpoint prefix in `model_dir`, or None."""
    return tf.train.latest_checkpoint(model_dir)


def _latest_array_checkpoint(model_dir):
    """The JAX engine's latest `ckpt-<step>.npz` in `model_dir`, or None."""
    found = _array_checkpoints(model_dir)
    return found[-1][1] if found else None


def latest_checkpoint(model_dir, engine_name):
    """The latest checkpoint of engine `engine_name` in `model_dir`, or None.

    Args:
        model_dir: str.
        engine_name: str. `"tensorflow"` or `"jax"` (`Engine.name`).

    Raises:
        ValueError: `model_dir` holds only the other engine's checkpoints.
    """
    found = {
        "tensorflow": _latest_tf_checkpoint(model_dir),
        "jax": _latest_array_checkpoint(model_dir),
    }
    if found[engine_name] is None:
        for name, path in found.items():
            if path is not None:
                raise ValueError(
                    f"{model_dir!r} holds a checkpoint of the {name} engine ({path}): resume "
                    f"it with KERAS_BACKEND={name}, or start over with --clean_model_dir. "
                    "(model.weights.h5 loads on either backend, e.g. as --pre_trained_model.)"
                )
    return found[engine_name]


def _array_checkpoints(model_dir):
    """[(step, path)] of the `ckpt-<step>.npz` files, by step."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(model_dir), CHECKPOINT_NAME + "-*.npz")):
        number = os.path.basename(path)[len(CHECKPOINT_NAME) + 1 : -len(".npz")]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def _cannot_resume(path, reason):
    return ValueError(
        f"Cannot resume from {path!r}: it does not match the model being trained "
        f"({reason}). Use the settings it was written with, another --model_dir, or "
        "--clean_model_dir to start over."
    )


class _Checkpointer:
    """What both engines' checkpoints share: the finite check, room on disk, model.weights.h5.

    Args:
        model: `PACSegmenter`.
        optimizer: its Keras optimizer.
        config: `TrainConfig`.
        chief: bool. Whether this process writes model.weights.h5.
    """

    def __init__(self, model, optimizer, config, chief):
        self.model = model
        self.config = config
        self.chief = chief
        self.optimizer = optimizer
        self.writes_checkpoint = True  # False where another process writes it.

    def save(self, step, input_position):
        """Saves everything for `step` (`input_position` batches read) unless a weight is
        non-finite; returns the checkpoint's path (`Engine.save`)."""
        if not self._all_finite():
            raise NonFiniteLossError(
                f"Non-finite weights at step {step}: training stopped without saving them. "
                f"The last good checkpoint in {self.config.model_dir} is kept. Lower "
                "--initial_learning_rate, or use --debug to find the op."
            )
        path = self._path(step)
        if not self.writes_checkpoint:
            return path
        what = f"the checkpoint of step {step}"
        checkpoint_bytes = _size_of([*self.model.variables, *self.optimizer.variables])
        weights_bytes = _size_of(self.model.weights) if self.chief else 0
        # Before writing anything, so that the previous save stays whole.
        files.check_free_space(
            what + (" and model.weights.h5" if self.chief else ""),
            path,
            checkpoint_bytes + weights_bytes,
            _ADVICE,
        )
        with files.reporting_disk_errors(what, path, checkpoint_bytes, _ADVICE):
            path = self._write(step, input_position)
        if not self.chief:
            return path
        weights_path = os.path.join(
            self.config.model_dir, sources.MODEL_STEM + sources.WEIGHTS_SUFFIX
        )
        with files.reporting_disk_errors(
            "model.weights.h5 and model.json", weights_path, weights_bytes, _ADVICE
        ):
            saving.save_model_weights(
                self.model, weights_path, **components.model_metadata(self.config, step)
            )
        logging.info("Saved %s and model.weights.h5 (step %d).", path, step)
        return path


class TFCheckpointer(_Checkpointer):
    """`tf.train.Checkpoint(model, optimizer)`: written by every worker, kept by the chief."""

    def __init__(self, model, optimizer, strategy, config):
        super().__init__(model, optimizer, config, distribute.is_chief(strategy))
        # Also what makes a resumed run the uninterrupted one: dropout's seed
        # (Keras leaves it out of the model's checkpoint) and the input
        # position. Older checkpoints lack these extras and resume without them.
        weights = {id(v) for v in model.weights}
        self._position = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._extras = dict(
            random_state=[v for v in model.variables if id(v) not in weights],
            input_position=self._position,
        )
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **self._extras)
        self._required = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.directory = distribute.write_dir(config.model_dir, strategy)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.directory,
            max_to_keep=config.keep_checkpoint_max,
            checkpoint_name=CHECKPOINT_NAME,
        )
        self._finite = tf.function(lambda: _all_finite(model.weights), autograph=False)

    def restore_latest(self):
        """Restores the chief's latest checkpoint in model_dir; returns `Restored` or None."""
        path = _latest_tf_checkpoint(self.config.model_dir)
        if path is None:
            return None
        try:
            # The extras, restored below, are expected to be left over here.
            self._required.restore(path).expect_partial().assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise _cannot_resume(path, error) from error
        tf.train.Checkpoint(**self._extras).restore(path).expect_partial()
        position = int(self._position.numpy())
        return Restored(path, position if position >= 0 else None)

    def _all_finite(self):
        return bool(self._finite())

    def _path(self, step):
        return os.path.join(self.directory, f"{CHECKPOINT_NAME}-{int(step)}")

    def _write(self, step, input_position):
        self._position.assign(input_position)
        prefix = self._path(step)
        existed = tf.io.gfile.exists(prefix + ".index")
        try:
            return self.manager.save(checkpoint_number=step)
        except Exception:
            self._remove_failed_save(prefix, keep_files=existed)
            raise

    def _remove_failed_save(self, prefix, keep_files):
        """Deletes what a failed save of `prefix` left: its shards, the state file's
        temporary, and its files unless they were there before or the state names them."""
        remove_unfinished_saves(self.directory)
        state = tf.train.get_checkpoint_state(self.directory)
        recorded = state is not None and os.path.basename(state.model_checkpoint_path)
        if keep_files or recorded == os.path.basename(prefix):
            return  # Recorded: the error came after (while removing older ones).
        for path in glob.glob(glob.escape(prefix) + ".*"):
            with contextlib.suppress(OSError):  # The original error matters more.
                os.remove(path)


class ArrayCheckpointer(_Checkpointer):
    """`model_dir/ckpt-<step>.npz`: every model and optimizer variable, written by process 0.

    The arrays are stored in variable order under `model/<i>` and
    `optimizer/<i>`, with the variables' paths to check them against on
    restore. Written beside, then renamed: a kill never leaves half a file.

    Args:
        step_fn: `jax_step.JaxTrainStep`, whose state is saved and restored.
        config: `TrainConfig`.
        chief: bool. Whether this process writes.
    """

    def __init__(self, step_fn, config, chief):
        super().__init__(step_fn.model, step_fn.optimizer, config, chief)
        self.writes_checkpoint = chief
        self.step_fn = step_fn
        self.directory = config.model_dir
        self._variables = {
            "model": list(step_fn.model.variables),
            "optimizer": list(step_fn.optimizer.variables),
        }

    def restore_latest(self):
        """Restores the latest `ckpt-<step>.npz`; returns `Restored` or None."""
        path = _latest_array_checkpoint(self.config.model_dir)
        if path is None:
            return None
        with np.load(path) as arrays:
            for group, variables in self._variables.items():
                paths = [str(p) for p in arrays[f"{group}_paths"]]
                ours = [v.path for v in variables]
                if paths != ours:
                    difference = sorted(set(paths) ^ set(ours))[:5] or "their order"
                    raise _cannot_resume(path, f"{group} variables differ: {difference}")
                for index, variable in enumerate(variables):
                    value = arrays[f"{group}/{index}"]
                    if value.shape != tuple(variable.shape):
                        raise _cannot_resume(
                            path, f"{variable.path} has shape {value.shape}, not {variable.shape}"
                        )
                    variable.assign(value)
            position = None
            if "input_position" in arrays.files:
                position = int(arrays["input_position"])
        self.step_fn.load_from_model()
        return Restored(path, position)

    def _all_finite(self):
        self.step_fn.sync_to_model()
        values = (np.asarray(v.value) for v in self.model.weights)
        return all(np.all(np.isfinite(x)) for x in values if x.dtype.kind == "f")

    def _path(self, step):
        return os.path.join(self.directory, f"{CHECKPOINT_NAME}-{int(step)}.npz")

    def _write(self, step, input_position):
        path = self._path(step)
        arrays = {"input_position": np.int64(input_position)}
        for group, variables in self._variables.items():
            arrays[f"{group}_paths"] = np.asarray([v.path for v in variables])
            for index, variable in enumerate(variables):
                arrays[f"{group}/{index}"] = np.asarray(variable.value)
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        for _, old in _array_checkpoints(self.directory)[: -self.config.keep_checkpoint_max]:
            os.remove(old)
        return path
