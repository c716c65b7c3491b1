"""The training engine contract: everything the loop (`loop.Trainer`) asks of an engine.

One engine per Keras backend, both subclasses of `Engine`:
`tf_engine.TFEngine` (TensorFlow, `tf.distribute`) and `jax_engine.JaxEngine`
(JAX, `jax.sharding`). An engine owns the model, the optimizer, the step, the
input on the devices, the cooperation of workers and the checkpoint format;
the loop owns the schedule (when to log, save, evaluate and stop) and the
summaries (docs/design.md §6).

Checkpoints (`checkpoints` holds both formats): every save writes, in
`model_dir`, a resumable checkpoint of step N, `ckpt-N.index` + `ckpt-N.data-*`
(a `tf.train.Checkpoint`, TensorFlow engine) or `ckpt-N.npz` (JAX engine),
keeping the newest `keep_checkpoint_max`, and on the chief
`model.weights.h5` + `model.json`, which either backend loads. A resume
restores what makes the run go on as if it had never stopped: the model's
variables (weights, BatchNorm's moving statistics, dropout's seed), the
optimizer's (momentum, the step, float16's loss scale) and the input
position (`Restored`). Each engine resumes only its own format.
"""

import abc
import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `Engine.restore` found, beyond the state it put back into the model and optimizer.

    Attributes:
        path: str. The checkpoint restored.
        input_position: int or None. The global batches the run had read when
            it saved (more than its steps when float16 loss scaling skipped
            updates): where the input continues. None for a checkpoint written
            before the position was kept (then one batch per step).
    """

    path: str
    input_position: int | None


class Engine(abc.ABC):
    """One backend's side of a training run, driven by `loop.Trainer`.

    The loop replaces `config` by the one with the dataset's classes
    resolved (`classes.resolve_classes`), then calls `build`, then `restore`
    or (for a fresh run) `set_step`, then `train_step` on `batches` until the
    schedule ends, with `save`, `confusion_matrix` and
    `evaluation_model` between steps, and `export` at the end; `train` calls
    `barrier`, `check_numerics` and `close` around it.

    Args:
        config: `TrainConfig`.
        chief: bool. Whether this process writes `model_dir`'s shared files
            (model.weights.h5, summaries, the export).
        multi_worker: bool. Whether several processes train together (then
            `barrier` and `any_worker` are collectives: every worker calls
            them at the same point).
        per_replica_batch: int. The part of `config.batch_size` that each
            device trains on.
        write_dir: str. Where this process writes checkpoints and the export:
            `model_dir` on the chief.

    Attributes:
        model: `PACSegmenter`, once `build` made it (else None).
    """

    def __init__(self, config, *, chief, multi_worker, per_replica_batch, write_dir):
        self.config = config
        self.chief = chief
        self.multi_worker = multi_worker
        self.per_replica_batch = per_replica_batch
        self.write_dir = write_dir
        self.model = None

    @property
    @abc.abstractmethod
    def name(self):
        """str. The engine's backend, `"tensorflow"` or `"jax"` (a class attribute)."""

    @abc.abstractmethod
    def describe(self):
        """Returns: str. The devices and the parallelism, for the run's first log line."""

    @abc.abstractmethod
    def build(self):
        """Creates the model, the optimizer, the step and the checkpointer.

        Returns:
            The `PACSegmenter` to initialise (`initialization.initialize`) on
            a fresh run.
        """

    @abc.abstractmethod
    def barrier(self):
        """Returns when every worker got here (at once with one worker)."""

    @abc.abstractmethod
    def check_numerics(self, enabled):
        """--debug: makes the step fail at the first op that produces a NaN or inf.

        Args:
            enabled: bool. False turns the check off again.
        """

    @abc.abstractmethod
    def close(self):
        """Releases what the run held (a worker's scratch `write_dir`)."""

    @abc.abstractmethod
    def latest_checkpoint(self):
        """The latest checkpoint of this engine in `model_dir`; callable before `build`.

        Returns:
            str (its path) or None.

        Raises:
            ValueError: `model_dir` holds only the other engine's checkpoints.
        """

    @abc.abstractmethod
    def restore(self):
        """Restores the latest checkpoint into the model, the optimizer and the step.

        Returns:
            `Restored`, or None when `model_dir` holds no checkpoint.

        Raises:
            ValueError: the checkpoint does not match the model being trained.
        """

    @abc.abstractmethod
    def save(self, step, input_position):
        """Writes the checkpoint of `step` (and, on the chief, model.weights.h5).

        Args:
            step: int. The optimizer's count of applied updates.
            input_position: int. Global batches read so far, where a resumed
                run's input continues.

        Returns:
            str. The checkpoint's path.

        Raises:
            NonFiniteLossError: a weight is NaN or inf (nothing is written).
            files.SaveError: a full or unwritable disk; what earlier saves
                wrote is intact, and nothing of this one is left.
        """

    @property
    @abc.abstractmethod
    def step(self):
        """int. The optimizer's count of applied updates (reads it from the devices)."""

    @abc.abstractmethod
    def set_step(self, step):
        """Sets the optimizer's count of updates (a fresh run's `initial_global_step`)."""

    @abc.abstractmethod
    def batches(self, files, start_step=0, skip_list=None):
        """Endless training batches on the devices, each process reading its share.

        Args:
            files: list of str. The training records.
            start_step: int. Global batches to skip: those read before a resume.
                Defaults to 0.
            skip_list: `bad_records.SkipList` or None. Records left out
                (--skip_bad_records). Defaults to None.

        Returns:
            Iterator of global (images, labels) batches for `train_step`.
        """

    @abc.abstractmethod
    def train_step(self, images, labels):
        """One update on a global batch from `batches`; adds to the confusion matrix.

        Returns:
            dict of scalars (not yet read back from the devices): `loss`
            (total), `data_loss`, `regularization`, `learning_rate` (the one
            this step used) and `step` (the optimizer's count after it).
        """

    @abc.abstractmethod
    def reset_metrics(self):
        """Zeroes the running training confusion matrix."""

    @abc.abstractmethod
    def confusion_matrix(self):
        """Returns: int64 numpy [C, C]. The training confusion matrix since `reset_metrics`."""

    @abc.abstractmethod
    def first_replica(self, tensor):
        """Returns: the first device's part of a global batch from `batches`."""

    @abc.abstractmethod
    def evaluation_model(self):
        """Returns: the `PACSegmenter` holding the trained weights (synced from the devices)."""

    @abc.abstractmethod
    def any_worker(self, flag):
        """Whether `flag` is true on any worker (a collective on several).

        Args:
            flag: bool. This worker's.

        Returns:
            bool.
        """

    @abc.abstractmethod
    def export(self, export_dir, model=None):
        """Writes the inference SavedModel (`export.saved_model.write_saved_model`) if it can.

        Args:
            export_dir: str. `write_dir/export`.
            model: `PACSegmenter` or None. A model to export instead of the
                trained one (`--export_from=best`, on the chief). Defaults
                to None.

        Returns:
            str naming what was exported, or None when nothing was.

        Raises:
            files.SaveError: a full or unwritable disk (no partial export is left).
        """


def create_engine(config, strategy=None):
    """The engine of the Keras backend: `TFEngine` (tensorflow) or `JaxEngine` (jax).

    Args:
        config: `TrainConfig`.
        strategy: optional `tf.distribute.Strategy` (TensorFlow backend only).
            Defaults to `distribute.create_strategy(config.num_gpu)`.

    Returns:
        `Engine`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        if strategy is not None:
            raise ValueError(
                "Invalid argument `strategy`: the JAX engine trains on every local device "
                f"without a tf.distribute strategy. Received: strategy={strategy!r}"
            )
        from tf_pacseg.training.jax_engine import JaxEngine

        return JaxEngine(config)
    if backend != "tensorflow":
        raise ValueError(
            f"Training runs on the tensorflow or jax Keras backend. Received: {backend!r} "
            "(set KERAS_BACKEND)."
        )
    from tf_pacseg.training import distribute
    from tf_pacseg.training.tf_engine import TFEngine

    if strategy is None:
        strategy = distribute.create_strategy(num_gpu=config.num_gpu)
    return TFEngine(config, strategy)
