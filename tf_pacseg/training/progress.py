"""What a run reports while it trains: the console line, TensorBoard scalars and pictures.

Only the chief writes: the other workers (and JAX processes) get no-op
TensorBoard writers and print no progress line.
"""

import math
import os
import time

import tensorflow as tf
from absl import logging

from tf_pacseg.inference import forward, metrics
from tf_pacseg.training import summaries


def _format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The console and TensorBoard reports of one run.

    Args:
        config: `TrainConfig` (resolved: with its class names).
        engine: `engine.Engine`.
        schedule: `schedule.Schedule`.
        skip_list: `bad_records.SkipList` with --skip_bad_records, else None.
    """

    def __init__(self, config, engine, schedule, skip_list):
        self.config = config
        self.engine = engine
        self.schedule = schedule
        self.skip_list = skip_list
        self.chief = engine.chief
        self.train_writer, self.eval_writer = self._summary_writers()
        self._last_log = None  # (time, step) of the last log line.

    def start(self, step):
        """Logs what is trained, how, and from which step to which."""
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
            self.schedule.steps_per_epoch,
            step,
            self.schedule.last_step,
        )
        self._last_log = time.perf_counter(), step

    def log(self, step, outputs):
        """TensorBoard scalars of `step` and, on the chief, the console line."""
        now = time.perf_counter()
        last_time, last_step = self._last_log
        rate = (step - last_step) / max(now - last_time, 1e-9)
        self._last_log = now, step
        scalars = self._train_scalars(outputs, rate)
        with self.train_writer.as_default():
            summaries.write_scalars(scalars, step)
        if self.chief:  # One progress line per run, not one per process.
            self._log_line(step, scalars)

    def write_images(self, step, images, labels):
        """The first replica's images, labels and predictions (chief only)."""
        if not self.chief:
            return
        first_replica = self.engine.first_replica
        images = first_replica(images)[: summaries.MAX_IMAGES]
        labels = first_replica(labels)[: summaries.MAX_IMAGES]
        with self.train_writer.as_default():
            summaries.write_batch_images(
                step,
                images,
                labels,
                # Evaluation's compiled forward pass, not op by op (JAX).
                forward.forward_fn(self.engine.evaluation_model())(images),
                self.config.num_classes,
                self.config.ignore_label,
            )

    def write_evaluation(self, result, step):
        with self.eval_writer.as_default():
            summaries.write_segmentation_metrics(result, step)

    def _summary_writers(self):
        """(train, eval) TensorBoard writers: files on the chief, else no-ops."""
        if not self.chief:
            writer = tf.summary.create_noop_writer()
            return writer, writer
        model_dir = self.config.model_dir
        train_writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
        eval_writer = tf.summary.create_noop_writer()
        if self.schedule.eval_every:
            eval_writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
        return train_writer, eval_writer

    def _train_scalars(self, outputs, rate):
        """The training summaries: losses, learning rate, running metrics, speed."""
        config = self.config
        cm = self.engine.confusion_matrix()
        scalars = {
            "loss": float(outputs["loss"]),
            f"{config.loss}_loss": float(outputs["data_loss"]),
            "regularization": float(outputs["regularization"]),
            "learning_rate": float(outputs["learning_rate"]),
            "pixel_accuracy": metrics.pixel_accuracy(cm),
            "mean_iou": metrics.mean_iou(cm),
            "steps_per_second": rate,
        }
        if self.skip_list is not None:
            scalars["skipped_records"] = self.skip_list.num_skipped
        scalars.update(summaries.per_class_iou_scalars(cm, config.class_names))
        return scalars

    def _log_line(self, step, scalars):
        config, schedule = self.config, self.schedule
        rate = scalars["steps_per_second"]
        eta = (schedule.last_step - step) / rate if rate > 0 else float("inf")
        logging.info(
            "step %d/%d (epoch %.2f)  loss %.4f (%s %.4f, reg %.4f)  lr %.3g  train px acc "
            "%.4f mIoU %.4f  %.2f steps/s (%.1f images/s)  ETA %s%s",
            step,
            schedule.last_step,
            schedule.epoch(step),
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
            "" if self.skip_list is None else f"  {scalars['skipped_records']} records skipped",
        )
