"""The training loop, the same for both engines: the original's Estimator loop, by hand.

What a run does (the original's `_init_.py` + `model_fn`, docs/design.md §6):
epochs over the training records; a console line and TensorBoard scalars every
`log_every_n_steps`; a checkpoint every `save_checkpoints_steps`, before each
evaluation (as the Estimator did), on SIGINT/SIGTERM and at the end;
evaluation on the val records every `epochs_per_eval` epochs; training stops
after `max_iter` steps (from `initial_global_step`) or `train_epochs` epochs,
whichever comes first, and exports the model. Rerunning resumes at the saved
step with the optimizer's momentum and the schedule intact, and, with a
`seed`, the input order and augmentation where they stopped (no batch is
seen twice, even after float16 loss scaling skipped updates). A non-finite
loss (or weight) stops training before anything is saved, leaving the last
good checkpoint.

The engine (`tf_step.TFEngine` or `jax_step.JaxEngine`, chosen by the Keras
backend) owns the model, the step, the input on the devices and the
checkpoint format; everything else is here.
"""

import dataclasses
import math
import os
import shutil
import signal
import threading
import time

import keras
import tensorflow as tf
from absl import logging

from tf_pacseg.data import records
from tf_pacseg.inference import evaluation, metrics
from tf_pacseg.training import checkpoints, summaries
from tf_pacseg.training.config import NonFiniteLossError, TrainResult
from tf_pacseg.training.debug import nonfinite_op_error
from tf_pacseg.training.initialization import check_sources, initialize
from tf_pacseg.training.pretrained import resolve_pretrained_path

EXPORT_DIR = "export"


class StopRequest:
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


def _latest_checkpoint(model_dir, engine_name):
    """The engine's latest checkpoint in model_dir; an error if only the other engine's is there."""
    found = {
        "tensorflow": checkpoints.latest_tf_checkpoint(model_dir),
        "jax": checkpoints.latest_array_checkpoint(model_dir),
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


def _format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Trainer:
    """One training run on `engine` (state shared by the loop's helpers)."""

    def __init__(self, config, engine):
        self.config = config
        self.engine = engine
        self.chief = engine.chief

    def setup(self):
        config, engine = self.config, self.engine
        resuming = _latest_checkpoint(config.model_dir, engine.name) is not None
        if not resuming:
            check_sources(config)  # Before the slow parts.
        self.train_files = records.find_record_files(config.data_dir, "train")
        if config.epochs_per_eval:
            records.find_record_files(config.data_dir, "val")  # Fail now, not after an epoch.
        num_examples = records.count_examples(self.train_files)
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

        self.model = engine.build()
        self.checkpointer = engine.checkpointer
        resumed = self.checkpointer.restore_latest()
        if resumed:
            logging.info("Resuming from %s.", resumed)
            for name in ("pre_trained_model", "init_checkpoint"):
                if getattr(config, name):
                    logging.info("Ignoring --%s: model_dir holds a checkpoint.", name)
        else:
            logging.info(initialize(self.model, config))
            engine.set_step(self.first_step)
        self.step = engine.step
        if resumed:
            self.checkpointer.last_saved_step = self.step
        # With a seed, the input continues after the batches read before the
        # checkpoint (for a checkpoint that does not say, one per step).
        position = self.checkpointer.input_position if resumed else None
        self.batches_read = self.step - self.first_step if position is None else position
        self.batches = engine.batches(self.train_files, start_step=self.batches_read)
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

    def run(self, stop):
        config, engine = self.config, self.engine
        logging.info(
            "Training %s + %s (%s engine) with %s, batch %d (%d per replica), %d steps per "
            "epoch; steps %d -> %d.",
            config.base_architecture,
            config.head,
            engine.name,
            engine.describe(),
            config.batch_size,
            engine.per_replica_batch,
            self.steps_per_epoch,
            self.step,
            self.last_step,
        )
        result = TrainResult(step=self.step)
        pending_losses = []
        last_log_time, last_log_step = time.perf_counter(), self.step
        evaluated_at = None
        while self.step < self.last_step:
            if (self.step - self.first_step) % self.steps_per_epoch == 0:
                engine.reset_metrics()  # Running train metrics are per epoch.
            images, labels = next(self.batches)
            self.batches_read += 1
            outputs = engine.train_step(images, labels)
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
                self.checkpointer.save(self.step, self.batches_read)
            if eval_now:
                result.evaluation = self._evaluate()
                evaluated_at = self.step
            if self._stop_requested(stop, log_now):
                break
        self._check_finite(pending_losses)
        # The optimizer's count: float16 loss scaling may have skipped updates since the
        # last log, and a stop comes at any step.
        self.step = result.step = engine.step
        if self.checkpointer.last_saved_step != self.step:
            self.checkpointer.save(self.step, self.batches_read)
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
        export_dir = os.path.join(engine.write_dir, EXPORT_DIR)
        what = engine.export(export_dir)
        if self.chief and what:
            logging.info("Exported %s to %s.", what, export_dir)
        logging.info("Training finished at step %d.", self.step)
        return result

    def _stop_requested(self, stop, log_now):
        if not self.engine.multi_worker:
            return stop.signum is not None
        # Workers must stop at the same step: agree at each log step.
        if log_now and self.engine.any_worker(stop.signum is not None):
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
        cm = self.engine.confusion_matrix()
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
        images = self.engine.first_replica(images)[: summaries.MAX_IMAGES]
        labels = self.engine.first_replica(labels)[: summaries.MAX_IMAGES]
        summaries.write_batch_images(
            self.step,
            images,
            labels,
            self.engine.predict(images),
            self.config.num_classes,
            self.config.ignore_label,
        )

    def _evaluate(self):
        """Evaluates on the val records (on the chief; the others go on and wait)."""
        if not self.chief:
            return None
        start = time.perf_counter()
        result = evaluation.evaluate(
            self.engine.evaluation_model(),
            data_dir=self.config.data_dir,
            batch_size=2 * self.engine.per_replica_batch,  # The original's eval batch.
            crop_size=(self.config.input_height, self.config.input_width),
            ignore_label=self.config.ignore_label,
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


def create_engine(config, strategy=None):
    """The engine of the Keras backend: `TFEngine` (tensorflow) or `JaxEngine` (jax)."""
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
    from tf_pacseg.training.tf_step import TFEngine

    if strategy is None:
        strategy = distribute.create_strategy(num_gpu=config.num_gpu)
    return TFEngine(config, strategy)


def train(config, strategy=None):
    """Trains (or resumes training) as `config` says; see the module docstring.

    Args:
        config: `TrainConfig`.
        strategy: optional `tf.distribute.Strategy` (TensorFlow backend only).
            Defaults to `distribute.create_strategy(config.num_gpu)`
            (multi-worker with `TF_CONFIG`), created before anything else
            touches TensorFlow's devices; create it yourself, first, to choose
            the devices.

    Returns:
        `TrainResult`.

    Raises:
        FileNotFoundError: missing records or --pre_trained_model.
        ValueError: invalid settings, or a model_dir checkpoint that does not
            match the model.
        NonFiniteLossError: the loss or the weights became NaN/inf (with
            `debug`, naming the op that made them).
    """
    config = dataclasses.replace(
        config,
        pre_trained_model=resolve_pretrained_path(
            config.pre_trained_model, config.base_architecture
        ),
    )
    engine = create_engine(config, strategy)
    if config.clean_model_dir and engine.chief and os.path.exists(config.model_dir):
        logging.info("--clean_model_dir: deleting %s.", config.model_dir)
        shutil.rmtree(config.model_dir)
    engine.barrier()  # No worker may read model_dir before the chief cleaned it.
    os.makedirs(config.model_dir, exist_ok=True)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    trainer = Trainer(config, engine)
    try:
        engine.check_numerics(config.debug)
        trainer.setup()
        with StopRequest() as stop:
            return trainer.run(stop)
    except (tf.errors.InvalidArgumentError, FloatingPointError) as error:
        step = getattr(trainer, "step", config.initial_global_step)
        found = nonfinite_op_error(error, step, config.model_dir)
        if found is None:
            raise
        raise found from error  # --debug named the op.
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        engine.check_numerics(False)
        engine.close()
