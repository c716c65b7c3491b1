"""Training: the original's Estimator loop as a TF2 custom loop under `tf.distribute`.

TensorFlow-only module. What a run does (the original's `_init_.py` +
`model_fn`, SPEC §2):

- Loss: boundary-aware loss (or plain cross entropy) + slim-style L2 on every
  conv kernel (`model.losses`); dropout active.
- `fine_tune_batch_norm=True`: BatchNorm uses and updates batch statistics
  and its beta/gamma are NOT trained; `False`: moving statistics, beta/gamma
  trained.
- TF1 momentum on the poly schedule, counted from `initial_global_step`.
- Epochs over the training records; evaluation on the val records every
  `epochs_per_eval` epochs; stops after `max_iter` steps (from
  `initial_global_step`) or `train_epochs` epochs, whichever comes first.

Data parallelism. The global batch (`batch_size`) is split over the
replicas; the loss is normalised by the global batch's weighted-pixel count
and the gradients are summed once, so R replicas make the update of one
replica on the global batch (see `TrainStep`). The original's towers
averaged per-tower means instead; the two agree when the towers weigh the
same number of pixels. BatchNorm normalises with per-replica statistics, as
the original's towers did, unless `sync_batch_norm`. Each replica updates
its own copy of the moving statistics and checkpoints keep the first
replica's (the original's towers updated one shared copy in turn).

Never losing work: `tf.train.Checkpoint(model, optimizer)` in `model_dir`
every `save_checkpoints_steps`, before each evaluation (as the Estimator
did), on SIGINT/SIGTERM and at the end; rerunning resumes at the saved step
with the optimizer's momentum and the schedule intact (the input order
restarts). Each save also writes `model_dir/model.weights.h5` + `model.json`
for evaluate.py/predict.py, and the end of training an inference SavedModel
in `model_dir/export` (see `export_inference_model`). A non-finite loss (or
weight) stops training before anything is saved, leaving the last good
checkpoint.

Example:

```python
from tf_pacseg import trainer
trainer.train(trainer.TrainConfig(data_dir="dataset", model_dir="model", pre_trained_model=""))
```
"""

import dataclasses
import math
import os
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_pacseg import (
    constants,
    distribute,
    evaluation,
    input_pipeline,
    losses,
    metrics,
    records,
    saving,
    summaries,
    tf1_checkpoint,
)
from tf_pacseg.model import build_model
from tf_pacseg.optimizers import PolyDecay, TF1Momentum

LOSSES = ("bal", "ce")
MIXED_PRECISION_POLICIES = ("none", "mixed_float16", "mixed_bfloat16")
EXPORT_DIR = "export"
CHECKPOINT_NAME = "ckpt"
# Variables the original leaves untrained when fine-tuning BatchNorm.
_BATCH_NORM_PARAMETERS = ("gamma", "beta")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); nothing was saved after it."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the original's flags.

    Args:
        num_gpu: int. GPUs per machine (0: CPU) when `train` creates the
            strategy. Defaults to 1.
        model_dir: str. Checkpoints, summaries, weights and export. Defaults
            to `"./model"`.
        data_dir: str. Folder of the train/val TFRecords. Defaults to `"./dataset/"`.
        pre_trained_model: str or None. Backbone initialisation: a TF1
            ImageNet checkpoint prefix (e.g. `resnet_v1_101_beta`), or a
            `.weights.h5` with its `.json` (or a directory holding
            `model.weights.h5`); only the backbone is loaded, as the original
            did. `None` or `""` trains from scratch. Ignored when resuming.
            Defaults to `None`.
        clean_model_dir: bool. Delete `model_dir` first. Defaults to `False`.
        base_architecture: str. Defaults to `"resnet_v1_101"`.
        head: str. `"pac"` or `"aspp"`. Defaults to `"pac"`.
        output_stride: int. 8 or 16. Defaults to 16.
        num_classes: int. Defaults to 21.
        batch_norm_decay: float. The head's BatchNorm decay. Defaults to 0.9997.
        weight_decay: float. Defaults to 1e-4.
        fine_tune_batch_norm: bool. See the module docstring. Defaults to `True`.
        sync_batch_norm: bool. Batch statistics over all replicas. Defaults to `False`.
        units_per_block: tuple of 4 ints or None. A shallower backbone (tests,
            demos). Defaults to `None` (the architecture's).
        loss: str. `"bal"` (boundary-aware) or `"ce"`. Defaults to `"bal"`.
        batch_size: int. Global batch, split over all replicas. Defaults to 16.
        train_epochs: int. Defaults to 46.
        epochs_per_eval: int. Evaluate every this many epochs; 0 never.
            Defaults to 1.
        max_iter: int. Steps of the poly schedule, and at most of training.
            Defaults to 30000.
        initial_global_step: int. Step a fresh run starts at (fine-tuning);
            the schedule and `max_iter` count from it. Defaults to 0.
        initial_learning_rate: float. Defaults to 0.007.
        end_learning_rate: float. Defaults to 0.
        power: float. Defaults to 0.9.
        momentum: float. Defaults to 0.9.
        input_height: int. Training crop height. Defaults to 513.
        input_width: int. Training crop width. Defaults to 513.
        min_scale: float. Defaults to 0.5.
        max_scale: float. Defaults to 2.0.
        ignore_label: int. Defaults to 255.
        mixed_precision: str. `"none"`, `"mixed_float16"` (with loss
            scaling) or `"mixed_bfloat16"`. Defaults to `"none"`.
        jit_compile: bool. XLA-compile each replica's forward/backward pass.
            Defaults to `False`.
        debug: bool. `tf.debugging.enable_check_numerics`. Defaults to `False`.
        log_every_n_steps: int. Console line and scalar summaries. Defaults to 10.
        save_checkpoints_steps: int. Defaults to 1000.
        keep_checkpoint_max: int. Defaults to 5.
        seed: int or None. Initialisation, dropout and input order. Defaults to `None`.
        shuffle_buffer: int. Examples in the input shuffle buffer. Defaults to
            10582 (an epoch of train_aug).
    """

    num_gpu: int = 1
    model_dir: str = "./model"
    data_dir: str = "./dataset/"
    pre_trained_model: str | None = None
    clean_model_dir: bool = False
    base_architecture: str = "resnet_v1_101"
    head: str = "pac"
    output_stride: int = 16
    num_classes: int = constants.NUM_CLASSES
    batch_norm_decay: float = 0.9997
    weight_decay: float = 1e-4
    fine_tune_batch_norm: bool = True
    sync_batch_norm: bool = False
    units_per_block: tuple | None = None
    loss: str = "bal"
    batch_size: int = 16
    train_epochs: int = 46
    epochs_per_eval: int = 1
    max_iter: int = 30000
    initial_global_step: int = 0
    initial_learning_rate: float = 0.007
    end_learning_rate: float = 0.0
    power: float = 0.9
    momentum: float = 0.9
    input_height: int = 513
    input_width: int = 513
    min_scale: float = constants.MIN_SCALE
    max_scale: float = constants.MAX_SCALE
    ignore_label: int = constants.IGNORE_LABEL
    mixed_precision: str = "none"
    jit_compile: bool = False
    debug: bool = False
    log_every_n_steps: int = 10
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    seed: int | None = None
    shuffle_buffer: int = input_pipeline.DEFAULT_SHUFFLE_BUFFER

    def __post_init__(self):
        choices = {
            "base_architecture": constants.BASE_ARCHITECTURES,
            "head": constants.HEADS,
            "output_stride": constants.OUTPUT_STRIDES,
            "loss": LOSSES,
            "mixed_precision": MIXED_PRECISION_POLICIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected one of {allowed}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )
        positive = (
            "batch_size",
            "train_epochs",
            "max_iter",
            "num_classes",
            "input_height",
            "input_width",
            "log_every_n_steps",
            "save_checkpoints_steps",
            "keep_checkpoint_max",
            "shuffle_buffer",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a strictly positive value. "
                    f"Received: {name}={getattr(self, name)}"
                )
        for name in ("num_gpu", "epochs_per_eval", "initial_global_step"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a non-negative value. "
                    f"Received: {name}={getattr(self, name)}"
                )
        if self.units_per_block is not None:
            self.units_per_block = tuple(int(n) for n in self.units_per_block)
            if len(self.units_per_block) != 4 or min(self.units_per_block) < 1:
                raise ValueError(
                    "Invalid value for `units_per_block`. Expected 4 strictly positive "
                    f"ints. Received: units_per_block={self.units_per_block}"
                )


@dataclasses.dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        step: int. The global step reached.
        interrupted: int or None. The signal that stopped training early
            (after saving), else `None`.
        evaluation: dict or None. The last evaluation result
            (`evaluation.result_from_confusion_matrix`), if any.
    """

    step: int
    interrupted: int | None = None
    evaluation: dict | None = None


# ----------------------------------------------------------------------------
# Model, optimizer and the distributed step.
# ----------------------------------------------------------------------------


def build_training_model(config):
    """The `PACSegmenter` of `config` (call under the strategy's scope)."""
    return build_model(
        base_architecture=config.base_architecture,
        head=config.head,
        output_stride=config.output_stride,
        num_classes=config.num_classes,
        batch_norm_decay=config.batch_norm_decay,
        weight_decay=config.weight_decay,
        fine_tune_batch_norm=config.fine_tune_batch_norm,
        sync_batch_norm=config.sync_batch_norm,
        units_per_block=config.units_per_block,
    )


def build_optimizer(config):
    """TF1 momentum on the poly schedule; wrapped for loss scaling under float16."""
    schedule = PolyDecay(
        initial_learning_rate=config.initial_learning_rate,
        max_iter=config.max_iter,
        end_learning_rate=config.end_learning_rate,
        power=config.power,
        initial_step=config.initial_global_step,
    )
    optimizer = TF1Momentum(learning_rate=schedule, momentum=config.momentum)
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def trainable_variables(model):
    """The variables the original trains: all but BatchNorm's when fine-tuning it.

    With `fine_tune_batch_norm` the original excluded every variable named
    beta or gamma (their moving statistics still update).
    """
    if not model.fine_tune_batch_norm:
        return list(model.trainable_variables)
    return [v for v in model.trainable_variables if v.name not in _BATCH_NORM_PARAMETERS]


def weighted_pixel_count(labels, ignore_label=constants.IGNORE_LABEL):
    """The loss's denominator #{i : w_i·m_i ≠ 0}, from the labels alone.

    The boundary-aware weights are at least 0.5 (and plain CE's are 1), so
    the pixels with a non-zero weight are exactly those not ignored. Knowing
    it before the forward pass lets every replica divide by the global count
    without a cross-replica sum inside the (possibly XLA-compiled) backward.
    """
    return tf.reduce_sum(tf.cast(tf.not_equal(labels, ignore_label), tf.float32))


def agree_on_overflow(gradients, context):
    """Makes every replica's gradients non-finite when any replica's are.

    Keras' `LossScaleOptimizer` decides whether to skip a step from the
    gradients before they are summed over replicas, looking at one replica's
    (or each replica on its own): an overflow on another replica would be
    summed into the update, or the replicas would disagree. Call it in
    replica context, on the gradients passed to the optimizer.

    Args:
        gradients: list of tensors (or None) of this replica.
        context: the `tf.distribute.ReplicaContext`.

    Returns:
        The gradients, all multiplied by NaN if any replica had a non-finite one.
    """
    present = [g for g in gradients if g is not None]
    overflow = tf.cast(
        tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])),
        tf.float32,
    )
    overflow = context.all_reduce(tf.distribute.ReduceOp.SUM, overflow)
    factor = tf.where(overflow > 0, float("nan"), 1.0)
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]


class TrainStep:
    """The distributed training step: forward, loss, backward, update, metrics.

    Call it with distributed (per-replica) batches from
    `strategy.distribute_datasets_from_function`. It also accumulates the
    training confusion matrix in `confusion_matrix` (reset with
    `reset_metrics`).

    Scaling over R replicas: replica r minimises Σ_r / N + regularization / R,
    where Σ_r is its weighted cross-entropy sum and N the weighted-pixel count
    of the global batch (summed over replicas before the forward pass). The
    Keras optimizer sums the replicas' gradients once (all-reduce in
    `apply`), giving the gradient of Σ Σ_r / N + regularization: the
    single-replica loss of the global batch. Each replica's objective is
    already scaled before backpropagation, so this stays exact when
    synchronised BatchNorm carries gradients across replicas.

    Args:
        model: `PACSegmenter`, built under `strategy.scope()`.
        optimizer: Keras optimizer, created under `strategy.scope()`.
        strategy: the `tf.distribute.Strategy`.
        loss: str. `"bal"` or `"ce"`. Defaults to `"bal"`.
        ignore_label: int. Defaults to 255.
        jit_compile: bool. XLA-compile each replica's forward and backward
            pass (the update stays outside XLA). Defaults to `False`.

    Example:

    ```python
    step = TrainStep(model, optimizer, strategy)
    for images, labels in distributed_dataset:
        outputs = step(images, labels)  # {"loss": ..., "learning_rate": ...}
    ```
    """

    def __init__(self, model, optimizer, strategy, loss="bal", ignore_label=255, jit_compile=False):
        if loss not in LOSSES:
            raise ValueError(
                f"Invalid value for argument `loss`. Expected one of {LOSSES}. "
                f"Received: loss={loss!r}"
            )
        if (
            jit_compile
            and model.sync_batch_norm
            and not distribute.supports_collectives_in_xla(strategy)
        ):
            raise ValueError(
                "jit_compile with sync_batch_norm needs cross-replica sums inside XLA, which "
                "MirroredStrategy only has on GPUs. Drop one of them."
            )
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.loss = loss
        self.ignore_label = ignore_label
        self.jit_compile = jit_compile
        self.num_classes = model.num_classes
        self.variables = trainable_variables(model)
        self._loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        with strategy.scope():
            optimizer.build(self.variables)
        # The running confusion matrix, updated in cross-replica context.
        with tf.init_scope():
            self.confusion_matrix = tf.Variable(
                tf.zeros([self.num_classes, self.num_classes], tf.int64), trainable=False
            )
        self._step = tf.function(self._distributed_step)

    def __call__(self, images, labels):
        """One update on a distributed batch.

        Returns:
            dict of scalar tensors: `loss` (total), `data_loss` (BAL or CE of
            the global batch), `regularization`, `learning_rate` (the one
            this step used) and `step` (the global step after the update).
        """
        return self._step(images, labels)

    def reset_metrics(self):
        self.confusion_matrix.assign(tf.zeros_like(self.confusion_matrix))

    def _gradients(self, images, labels, global_count):
        """Gradients of this replica's share of the global-batch loss."""
        num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)  # (batch, height, width, classes)
            weighted_sum, _ = losses.boundary_aware_loss_terms(
                labels,
                logits,
                num_classes=self.num_classes,
                ignore_label=self.ignore_label,
                use_boundary_weights=self.loss == "bal",
            )
            data_loss = tf.math.divide_no_nan(weighted_sum, global_count)
            regularization = tf.add_n(
                [tf.cast(x, tf.float32) for x in self.model.losses] or [tf.constant(0.0)]
            )
            objective = data_loss + regularization / num_replicas
            scaled = self.optimizer.scale_loss(objective)  # Loss scaling (float16).
        gradients = tape.gradient(scaled, self.variables)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        confusion = metrics.confusion_matrix(
            labels, predictions, self.num_classes, self.ignore_label
        )
        return gradients, data_loss, regularization, confusion

    def _replica_step(self, images, labels):
        context = tf.distribute.get_replica_context()
        count = weighted_pixel_count(labels, self.ignore_label)
        if context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        gradients_fn = self._gradients
        if self.jit_compile:
            # Created while tracing each replica: each gets its own XLA
            # function, bound to its own copies of the variables.
            gradients_fn = tf.function(gradients_fn, jit_compile=True)
        gradients, data_loss, regularization, confusion = gradients_fn(images, labels, count)
        if self._loss_scaling and context.num_replicas_in_sync > 1:
            gradients = agree_on_overflow(gradients, context)
        # Keras' optimizer sums the gradients over replicas (all-reduce SUM).
        self.optimizer.apply(gradients, self.variables)
        return {
            "data_loss": data_loss,
            "regularization": regularization,
            "confusion_matrix": confusion,
        }

    def _distributed_step(self, images, labels):
        learning_rate = tf.cast(self.optimizer.learning_rate, tf.float32)
        outputs = self.strategy.run(self._replica_step, args=(images, labels))
        reduce = self.strategy.reduce
        data_loss = reduce(tf.distribute.ReduceOp.SUM, outputs["data_loss"], axis=None)
        regularization = reduce(tf.distribute.ReduceOp.MEAN, outputs["regularization"], axis=None)
        confusion = reduce(tf.distribute.ReduceOp.SUM, outputs["confusion_matrix"], axis=None)
        self.confusion_matrix.assign_add(tf.cast(confusion, tf.int64))
        return {
            "loss": data_loss + regularization,
            "data_loss": data_loss,
            "regularization": regularization,
            "learning_rate": learning_rate,
            "step": tf.identity(self.optimizer.iterations),
        }


# ----------------------------------------------------------------------------
# Initialisation, checkpoints and export.
# ----------------------------------------------------------------------------


def resolve_pretrained_path(path, base_architecture):
    """Substitutes `<arch>` (the original's default path) with the architecture."""
    if not path:
        return None
    return path.replace("<arch>", base_architecture)


def load_pretrained(model, path):
    """Initialises the backbone from a TF1 checkpoint or a Keras weights file.

    Args:
        model: `PACSegmenter`.
        path: str or None. A TF1 checkpoint prefix (or directory with a
            `checkpoint` file), a `.weights.h5` with its `.json`, or a
            directory holding `model.weights.h5`. `None`/`""`: nothing to load.

    Returns:
        str, a line saying what was loaded.

    Raises:
        FileNotFoundError: `path` names nothing loadable; the message names it.
        ValueError: the file's backbone differs from the model's.
    """
    if not path:
        return "No --pre_trained_model: training from scratch."
    weights = saving.find_weights(path)
    if weights is not None:
        source = saving.load_model(weights)
        ours = model.architecture()
        theirs = source.architecture()
        for key in ("base_architecture", "units_per_block"):
            if ours[key] != theirs[key]:
                raise ValueError(
                    f"--pre_trained_model {path!r} holds a {key}={theirs[key]!r} backbone; "
                    f"the model being trained has {key}={ours[key]!r}."
                )
        model.backbone.set_weights(source.backbone.get_weights())
        return f"Loaded the backbone from {weights}."
    if tf1_checkpoint.is_tf1_checkpoint(path):
        report = tf1_checkpoint.load_tf1_checkpoint(model, path, backbone_only=True)
        return f"Loaded the backbone: {report.summary()}."
    raise _missing_pretrained(path)


def _missing_pretrained(path):
    return FileNotFoundError(
        f"--pre_trained_model {path!r} does not exist or is not a model: expected a TF1 "
        "checkpoint prefix (with .index and .data-* files), a *.weights.h5 file with its "
        ".json, or a directory holding model.weights.h5. Pass --pre_trained_model= "
        "(empty) to train from scratch."
    )


def export_inference_model(model, export_dir):
    """Writes an inference SavedModel of `model`.

    Signature `serving_default` (also the `serve` endpoint):
    `images`: float32 [N, H, W, 3], RGB in 0..255, any H and W ->
    `logits`: float32 [N, H, W, num_classes] (argmax over the last axis gives
    the classes). BatchNorm and dropout run in inference mode.

    ```python
    served = tf.saved_model.load("model/export")
    logits = served.signatures["serving_default"](images=images)["logits"]
    ```

    Args:
        model: `PACSegmenter`.
        export_dir: str. Replaced atomically (written beside, then renamed).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: {"logits": tf.cast(model(images, training=False), tf.float32)},
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
    )
    partial = export_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(partial, verbose=False)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(partial, export_dir)


def _all_finite(variables):
    floats = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])


class _Checkpointer:
    """Checkpoints of the run: TF2 checkpoint on every worker, weights on the chief."""

    def __init__(self, model, optimizer, strategy, config):
        self.model = model
        self.strategy = strategy
        self.config = config
        self.chief = distribute.is_chief(strategy)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.directory = distribute.write_dir(config.model_dir, strategy)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.directory,
            max_to_keep=config.keep_checkpoint_max,
            checkpoint_name=CHECKPOINT_NAME,
        )
        self._all_finite = tf.function(lambda: _all_finite(model.weights))
        self.last_saved_step = None

    def restore_latest(self):
        """Restores the chief's latest checkpoint in model_dir; returns its path or None."""
        path = tf.train.latest_checkpoint(self.config.model_dir)
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise ValueError(
                f"Cannot resume from {path!r}: it does not match the model being trained "
                f"({error}). Use the settings it was written with, another --model_dir, or "
                "--clean_model_dir to start over."
            ) from error
        return path

    def save(self, step):
        """Saves everything for `step` unless some weight is non-finite."""
        if not bool(self._all_finite()):
            raise NonFiniteLossError(
                f"Non-finite weights at step {step}: training stopped without saving them. "
                f"The last good checkpoint in {self.config.model_dir} is kept. Lower "
                "--initial_learning_rate, or use --debug to find the op."
            )
        path = self.manager.save(checkpoint_number=step)
        self.last_saved_step = step
        if not self.chief:
            return
        saving.save_model_weights(
            self.model,
            os.path.join(self.config.model_dir, saving.MODEL_STEM + saving.WEIGHTS_SUFFIX),
            step=int(step),
        )
        logging.info("Saved %s and model.weights.h5 (step %d).", path, step)


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and stops at the next step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:  # A second signal: stop now.
            raise KeyboardInterrupt
        self.signum = signum
        logging.warning(
            "Received %s: saving a checkpoint and stopping (send it again to abort "
            "without saving).",
            signal.Signals(signum).name,
        )


def _count_examples(files):
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def _format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _AnyWorker:
    """Whether a flag is true on any worker: one small all-reduce across workers.

    Every worker must call it at the same point (it is a collective).
    """

    def __init__(self, strategy):
        def reduce_flag(flag):
            value = strategy.run(tf.identity, args=(flag,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        self._reduce = tf.function(reduce_flag)

    def __call__(self, flag):
        return bool(self._reduce(tf.constant(float(flag))) > 0)


def _barrier(strategy):
    """Returns when every worker got here."""
    if distribute.is_multi_worker(strategy):
        _AnyWorker(strategy)(False)


def _pretrained_exists(path):
    return saving.find_weights(path) is not None or tf1_checkpoint.is_tf1_checkpoint(path)


class _Trainer:
    """One training run (state shared by the loop's helpers)."""

    def __init__(self, config, strategy):
        self.config = config
        self.strategy = strategy
        self.chief = distribute.is_chief(strategy)
        self.multi_worker = distribute.is_multi_worker(strategy)

    def setup(self):
        config, strategy = self.config, self.strategy
        self.per_replica_batch = distribute.check_batch_size(config.batch_size, strategy)
        resuming = tf.train.latest_checkpoint(config.model_dir) is not None
        if config.pre_trained_model and not resuming:
            if not _pretrained_exists(config.pre_trained_model):
                raise _missing_pretrained(config.pre_trained_model)  # Before the slow parts.
        self.train_files = records.find_record_files(config.data_dir, "train")
        if config.epochs_per_eval:
            records.find_record_files(config.data_dir, "val")  # Fail now, not after an epoch.
        num_examples = _count_examples(self.train_files)
        self.steps_per_epoch = num_examples // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"The training records in {config.data_dir!r} hold {num_examples} examples, "
                f"fewer than one batch (--batch_size={config.batch_size})."
            )
        self.first_step = config.initial_global_step
        self.last_step = self.first_step + min(
            config.max_iter, config.train_epochs * self.steps_per_epoch
        )
        self.eval_every = config.epochs_per_eval * self.steps_per_epoch

        with strategy.scope():
            self.model = build_training_model(config)
            self.optimizer = build_optimizer(config)
        self.step_fn = TrainStep(
            self.model,
            self.optimizer,
            strategy,
            loss=config.loss,
            ignore_label=config.ignore_label,
            jit_compile=config.jit_compile,
        )
        self.checkpointer = _Checkpointer(self.model, self.optimizer, strategy, config)
        resumed = self.checkpointer.restore_latest()
        if resumed:
            logging.info("Resuming from %s.", resumed)
            if config.pre_trained_model:
                logging.info("Ignoring --pre_trained_model: model_dir holds a checkpoint.")
        else:
            logging.info(load_pretrained(self.model, config.pre_trained_model))
            self.optimizer.iterations.assign(self.first_step)
        self.step = int(self.optimizer.iterations.numpy())
        if resumed:
            self.checkpointer.last_saved_step = self.step
        self._any_worker = _AnyWorker(strategy) if self.multi_worker else None

        self.dataset = input_pipeline.distribute_dataset(
            strategy,
            input_pipeline.train_dataset,
            self.train_files,
            config.batch_size,
            crop_size=(config.input_height, config.input_width),
            min_scale=config.min_scale,
            max_scale=config.max_scale,
            ignore_label=config.ignore_label,
            shuffle_buffer=config.shuffle_buffer,
            seed=config.seed,
            repeat=True,
        )
        if self.chief:
            self.train_writer = tf.summary.create_file_writer(
                os.path.join(config.model_dir, "train")
            )
            self.eval_writer = tf.summary.create_noop_writer()
            if self.eval_every:
                eval_dir = os.path.join(config.model_dir, "eval")
                self.eval_writer = tf.summary.create_file_writer(eval_dir)
        else:
            self.train_writer = self.eval_writer = tf.summary.create_noop_writer()
        self._predict = tf.function(lambda images: self.model(images, training=False))

    def run(self, stop):
        config = self.config
        logging.info(
            "Training %s + %s with %s on %d replica(s) (this worker: %s), batch %d (%d per "
            "replica), %d steps per epoch; steps %d -> %d.",
            config.base_architecture,
            config.head,
            distribute.describe(self.strategy),
            self.strategy.num_replicas_in_sync,
            ", ".join(self.strategy.extended.worker_devices),
            config.batch_size,
            self.per_replica_batch,
            self.steps_per_epoch,
            self.step,
            self.last_step,
        )
        result = TrainResult(step=self.step)
        iterator = iter(self.dataset)
        pending_losses = []
        last_log_time, last_log_step = time.perf_counter(), self.step
        evaluated_at = None
        while self.step < self.last_step:
            if (self.step - self.first_step) % self.steps_per_epoch == 0:
                self.step_fn.reset_metrics()  # Running train metrics are per epoch.
            images, labels = next(iterator)
            outputs = self.step_fn(images, labels)
            self.step += 1
            pending_losses.append(outputs["loss"])
            log_now = self.step % config.log_every_n_steps == 0 or self.step == self.last_step
            # Like the original's Estimator, save before each evaluation.
            eval_now = bool(self.eval_every) and (
                (self.step - self.first_step) % self.eval_every == 0
            )
            save_now = self.step % config.save_checkpoints_steps == 0 or eval_now
            if log_now or save_now:
                self._check_finite(pending_losses)
                pending_losses = []
                # float16 loss scaling skips overflowing updates; the step is
                # the optimizer's count of applied updates.
                self.step = int(outputs["step"])
            if log_now:
                now = time.perf_counter()
                rate = (self.step - last_log_step) / max(now - last_log_time, 1e-9)
                last_log_time, last_log_step = now, self.step
                self._log(outputs, rate)
            if save_now or self.step == self.first_step + 1:
                with self.train_writer.as_default():
                    self._write_images(images, labels)
            if save_now:
                self.checkpointer.save(self.step)
            if eval_now:
                result.evaluation = self._evaluate()
                evaluated_at = self.step
            if self._stop_requested(stop, log_now):
                break
        result.step = self.step
        self._check_finite(pending_losses)
        if self.checkpointer.last_saved_step != self.step:
            self.checkpointer.save(self.step)
        if stop.signum is not None:
            result.interrupted = stop.signum
            logging.warning(
                "Stopped by %s at step %d; checkpoint saved. Run the same command again to resume.",
                signal.Signals(stop.signum).name,
                self.step,
            )
            return result
        if self.eval_every and evaluated_at != self.step:
            result.evaluation = self._evaluate()
        # Every worker exports (saving may involve collectives); only the
        # chief's copy lands in model_dir.
        export_dir = os.path.join(self.checkpointer.directory, EXPORT_DIR)
        export_inference_model(self.model, export_dir)
        if self.chief:
            logging.info("Exported the inference SavedModel to %s.", export_dir)
        logging.info("Training finished at step %d.", self.step)
        return result

    def _stop_requested(self, stop, log_now):
        if not self.multi_worker:
            return stop.signum is not None
        # Workers must stop at the same step: agree at each log step.
        if log_now and self._any_worker(stop.signum is not None):
            stop.signum = stop.signum or signal.SIGTERM
            return True
        return False

    def _check_finite(self, losses_since_check):
        values = [float(loss) for loss in losses_since_check]
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                bad_step = self.step - len(values) + offset + 1
                raise NonFiniteLossError(
                    f"The loss became {value} at step {bad_step}: training stopped without "
                    f"saving. The last good checkpoint in {self.config.model_dir} (step "
                    f"{self.checkpointer.last_saved_step or 'of the previous run, if any'}) "
                    "is kept. Lower --initial_learning_rate, or use --debug to find the op."
                )

    def _log(self, outputs, rate):
        config = self.config
        cm = self.step_fn.confusion_matrix.numpy()
        per_class = metrics.per_class_iou(cm)
        scalars = {
            "loss": float(outputs["loss"]),
            f"{config.loss}_loss": float(outputs["data_loss"]),
            "regularization": float(outputs["regularization"]),
            "learning_rate": float(outputs["learning_rate"]),
            "pixel_accuracy": metrics.pixel_accuracy(cm),
            "mean_iou": metrics.mean_iou(cm),
            "steps_per_second": rate,
        }
        names = evaluation.class_names(config.num_classes)
        scalars.update(
            {f"iou/{n}": float(v) for n, v in zip(names, per_class, strict=True) if v == v}
        )
        with self.train_writer.as_default():
            summaries.write_scalars(scalars, self.step)
        epoch = (self.step - self.first_step) / self.steps_per_epoch
        eta = (self.last_step - self.step) / rate if rate > 0 else float("inf")
        logging.info(
            "step %d/%d (epoch %.2f)  loss %.4f (%s %.4f, reg %.4f)  lr %.3g  train px acc "
            "%.4f mIoU %.4f  %.2f steps/s (%.1f images/s)  ETA %s",
            self.step,
            self.last_step,
            epoch,
            scalars["loss"],
            config.loss,
            scalars[f"{config.loss}_loss"],
            scalars["regularization"],
            scalars["learning_rate"],
            scalars["pixel_accuracy"],
            scalars["mean_iou"],
            rate,
            rate * config.batch_size,
            _format_duration(eta),
        )

    def _write_images(self, images, labels):
        if not self.chief:
            return
        images = self.strategy.experimental_local_results(images)[0][: summaries.MAX_IMAGES]
        labels = self.strategy.experimental_local_results(labels)[0][: summaries.MAX_IMAGES]
        summaries.write_batch_images(
            self.step,
            images,
            labels,
            self._predict(images),
            self.config.num_classes,
            self.config.ignore_label,
        )

    def _evaluate(self):
        """Evaluates on the val records (on the chief; the others go on and wait)."""
        if not self.chief:
            return None
        start = time.perf_counter()
        result = evaluation.evaluate(
            self.model,
            data_dir=self.config.data_dir,
            batch_size=2 * self.per_replica_batch,  # The original's eval batch.
            crop_size=(self.config.input_height, self.config.input_width),
            verbose=0,
        )
        with self.eval_writer.as_default():
            summaries.write_segmentation_metrics(result, self.step)
        logging.info(
            "Evaluation at step %d (epoch %.2f) on %d images, %.0f s: mIoU %.4f, pixel "
            "accuracy %.4f\n%s",
            self.step,
            (self.step - self.first_step) / self.steps_per_epoch,
            result["num_images"],
            time.perf_counter() - start,
            result["miou"],
            result["pixel_accuracy"],
            evaluation.format_result(result),
        )
        return result


def train(config, strategy=None):
    """Trains (or resumes training) as `config` says; see the module docstring.

    Args:
        config: `TrainConfig`.
        strategy: optional `tf.distribute.Strategy`. Defaults to
            `distribute.create_strategy(config.num_gpu)` (multi-worker with
            `TF_CONFIG`), created before anything else touches TensorFlow's
            devices; create it yourself, first, to choose the devices.

    Returns:
        `TrainResult`.

    Raises:
        FileNotFoundError: missing records or --pre_trained_model.
        ValueError: invalid settings, or a model_dir checkpoint that does not
            match the model.
        NonFiniteLossError: the loss or the weights became NaN/inf.
    """
    if strategy is None:
        strategy = distribute.create_strategy(num_gpu=config.num_gpu)
    chief = distribute.is_chief(strategy)
    if config.clean_model_dir and chief and os.path.exists(config.model_dir):
        logging.info("--clean_model_dir: deleting %s.", config.model_dir)
        shutil.rmtree(config.model_dir)
    _barrier(strategy)  # No worker may read model_dir before the chief cleaned it.
    os.makedirs(config.model_dir, exist_ok=True)
    config = dataclasses.replace(
        config,
        pre_trained_model=resolve_pretrained_path(
            config.pre_trained_model, config.base_architecture
        ),
    )
    if config.debug:
        tf.debugging.enable_check_numerics()
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    trainer = _Trainer(config, strategy)
    try:
        trainer.setup()
        with _StopRequest() as stop:
            return trainer.run(stop)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if config.debug:
            tf.debugging.disable_check_numerics()
        if hasattr(trainer, "checkpointer"):
            distribute.remove_write_dir(trainer.checkpointer.directory, strategy)
