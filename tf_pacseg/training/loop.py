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
good checkpoint. A run holds model_dir's `run_lock.RunLock` throughout; a
full or unwritable disk stops it with a `files.SaveError`, what earlier saves
wrote intact. At start-up the class names and weights are read from the
dataset (`classes`); with `keep_best`, each evaluation that improves the
validation mIoU writes `model_dir/best/` (`best`).

The engine (`tf_engine.TFEngine` or `jax_engine.JaxEngine`, chosen by the
Keras backend; their contract is `engine.Engine`) owns the model, the step,
the input on the devices and the checkpoint format. `schedule.Schedule` says
which after-step action is due when; `Trainer` runs them.
"""

import contextlib
import dataclasses
import math
import os
import signal
import time

import keras
import tensorflow as tf
from absl import logging

from tf_pacseg.data import bad_records, records
from tf_pacseg.inference import evaluation, report
from tf_pacseg.model.initial_values import without_initial_values
from tf_pacseg.training import checkpoints, run_lock
from tf_pacseg.training.best import BestModel
from tf_pacseg.training.classes import resolve_classes
from tf_pacseg.training.config import NonFiniteLossError, TrainResult
from tf_pacseg.training.debug import nonfinite_op_error
from tf_pacseg.training.engine import create_engine
from tf_pacseg.training.initialization import check_sources, initialize, loaded_layers
from tf_pacseg.training.pretrained import resolve_pretrained_path
from tf_pacseg.training.progress import Progress
from tf_pacseg.training.schedule import Schedule, StepDone, StopRequest

EXPORT_DIR = "export"


class Trainer:
    """One training run on `engine` (an `engine.Engine`): the schedule and its actions.

    `run` is the schedule: a step, the after-step actions in order (finite
    check, log, images, save, evaluate), whether to stop; then `_finish`.

    Args:
        config: `TrainConfig`.
        engine: `engine.Engine`.
    """

    def __init__(self, config, engine):
        self.config = config
        self.engine = engine
        self.chief = engine.chief
        self.schedule = None  # `Schedule` (setup: it needs the records).
        # The loop's count, made the optimizer's at each log and save step.
        self.step = config.initial_global_step
        self.batches = None  # The engine's training batches (setup).
        self.train_files = None  # The training records (setup).
        self.skip_list = None  # --skip_bad_records: the records left out (setup).
        self.batches_read = 0  # Saved with each checkpoint: where a resumed input continues.
        self.last_saved_step = None
        self.evaluation = None  # The last evaluation's result.
        self.evaluated_at = None
        self.best = None  # --keep_best=miou: the `BestModel` (setup).
        self.progress = None  # `progress.Progress`: console and TensorBoard (setup).
        self._pending_losses = []  # Read back (a device sync) only at the finite check.
        self.actions = (
            self._check_finite,
            self._log,
            self._write_images,
            self._save,
            self._evaluate_if_due,
        )

    def setup(self):
        """Finds the records, builds, resumes or initialises, and opens the input and writers."""
        config = self.config
        if self.engine.latest_checkpoint() is None:
            check_sources(config)  # Before the slow parts.
        train_files = self.train_files = records.find_record_files(config.data_dir, "train")
        if config.epochs_per_eval:
            records.find_record_files(config.data_dir, "val")  # Fail now, not after an epoch.
        if config.skip_bad_records:
            self.skip_list = bad_records.scan(train_files)
            num_examples = self.skip_list.num_readable(train_files)
        else:
            num_examples = self._read(records.count_examples, train_files)
        self.schedule = Schedule.of(config, num_examples)
        # The engine builds its step from the resolved config.
        self.config = self.engine.config = config = resolve_classes(config)
        if config.keep_best == "miou":
            self.best = BestModel(config)
        self._restore_or_initialize()
        self.batches = self.engine.batches(
            train_files, start_step=self.batches_read, skip_list=self.skip_list
        )
        self.progress = Progress(config, self.engine, self.schedule, self.skip_list)

    def run(self, stop):
        """Trains to the schedule's last step or a stop request; returns `TrainResult`.

        Args:
            stop: `StopRequest`.
        """
        self.progress.start(self.step)
        while self.step < self.schedule.last_step:
            done = self._train_step()
            for action in self.actions:
                action(done)
            if self._stop_requested(stop, done.log):
                break
        return self._finish(stop)

    def _restore_or_initialize(self):
        config, engine = self.config, self.engine
        # What the checkpoint or the initialisation loads is not drawn first; both
        # load every weight they cover, or fail.
        resuming = engine.latest_checkpoint() is not None
        with without_initial_values(loaded_layers(config, resuming)):
            model = engine.build()
        restored = engine.restore()
        if restored:
            logging.info("Resuming from %s.", restored.path)
            for name in ("pre_trained_model", "init_checkpoint"):
                if getattr(config, name):
                    logging.info("Ignoring --%s: model_dir holds a checkpoint.", name)
        else:
            logging.info(initialize(model, config))
            engine.set_step(self.schedule.first_step)
        self.step = engine.step
        if restored:
            self.last_saved_step = self.step
            if self.best is not None and self.chief:
                self.best.restore()
        # With a seed, the input continues after the batches read before the
        # checkpoint (for a checkpoint that does not say, one per step).
        position = restored.input_position if restored else None
        self.batches_read = self.step - self.schedule.first_step if position is None else position

    def _train_step(self):
        """One step on the next batch; returns it as a `StepDone`."""
        if self.schedule.starts_epoch(self.step):
            self.engine.reset_metrics()  # Running train metrics are per epoch.
        images, labels = self._read(next, self.batches)
        self.batches_read += 1
        outputs = self.engine.train_step(images, labels)
        self.step += 1
        self._pending_losses.append(outputs["loss"])
        log, save, evaluate = self.schedule.due(self.step)
        return StepDone(images, labels, outputs, log=log, save=save, evaluate=evaluate)

    def _read(self, read, *args):
        """`read(*args)` of the training records; a record it cannot read stops the run, named.

        Nothing is saved then (a save is a collective that the other workers
        would not join): the last checkpoint stays the resume point, and the
        steps after it are trained again, on the same batches with a seed.
        """
        try:
            return read(*args)
        except bad_records.READ_ERRORS as error:
            saved = self.last_saved_step
            resume = f"from its last checkpoint, step {saved}"
            if saved is None:
                resume = f"from the last checkpoint in {self.config.model_dir}, if any"
            advice = (
                f"Training stopped without saving: a rerun resumes {resume}. "
                "--skip_bad_records trains without the records that cannot be read."
            )
            found = bad_records.located_error(self.train_files, error, advice)
            if found is None:
                raise
            raise found from error

    def _check_finite(self, done):
        """At log and save steps: the losses since the last check are finite."""
        if done.log or done.save:
            self._check_losses()
            # float16 loss scaling skips overflowing updates; the step is
            # the optimizer's count of applied updates.
            self.step = int(done.outputs["step"])

    def _log(self, done):
        if done.log:
            self.progress.log(self.step, done.outputs)

    def _write_images(self, done):
        """The batch, its labels and predictions of the first step and of each save."""
        if done.save or self.step == self.schedule.first_step + 1:
            self.progress.write_images(self.step, done.images, done.labels)

    def _save(self, done):
        if done.save:
            self._save_checkpoint()

    def _evaluate_if_due(self, done):
        if done.evaluate:
            self._evaluate()

    def _stop_requested(self, stop, log_now):
        if not self.engine.multi_worker:
            return stop.signum is not None
        # Workers must stop at the same step: agree at each log step.
        if log_now and self.engine.any_worker(stop.signum is not None):
            stop.signum = stop.signum or signal.SIGTERM
            return True
        return False

    def _finish(self, stop):
        """Saves the last step; unless stopped, evaluates (if not just done) and exports."""
        self._check_losses()
        # The optimizer's count: float16 loss scaling may have skipped updates since the
        # last log, and a stop comes at any step.
        self.step = self.engine.step
        if self.last_saved_step != self.step:
            self._save_checkpoint()
        if stop.signum is not None:
            logging.warning(
                "Stopped by %s at step %d; checkpoint saved. Run the same command again to resume.",
                signal.Signals(stop.signum).name,
                self.step,
            )
            return TrainResult(self.step, interrupted=stop.signum, evaluation=self.evaluation)
        if self.schedule.eval_every and self.evaluated_at != self.step:
            self._evaluate()
        export_dir = os.path.join(self.engine.write_dir, EXPORT_DIR)
        if self.config.export_from == "best":
            what = self.best.export(self.engine, export_dir) if self.chief else None
        else:
            what = self.engine.export(export_dir)
        if self.chief and what:
            logging.info("Exported %s to %s.", what, export_dir)
        skipped = ""
        if self.skip_list is not None:
            skipped = f" ({self.skip_list.num_skipped} unreadable records skipped, listed above)"
        logging.info("Training finished at step %d%s.", self.step, skipped)
        return TrainResult(self.step, evaluation=self.evaluation)

    def _save_checkpoint(self):
        self.engine.save(self.step, self.batches_read)
        self.last_saved_step = self.step

    def _check_losses(self):
        values = [float(loss) for loss in self._pending_losses]
        self._pending_losses = []
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                bad_step = self.step - len(values) + offset + 1
                raise NonFiniteLossError(
                    f"The loss became {value} at step {bad_step}: training stopped without "
                    f"saving. The last good checkpoint in {self.config.model_dir} (step "
                    f"{self.last_saved_step or 'of the previous run, if any'}) "
                    "is kept. Lower --initial_learning_rate, or use --debug to find the op."
                )

    def _evaluate(self):
        """Evaluates on the val records (on the chief; the others go on and wait)."""
        self.evaluated_at = self.step
        self.evaluation = None
        if not self.chief:
            return
        start = time.perf_counter()
        result = evaluation.evaluate(
            self.engine.evaluation_model(),
            data_dir=self.config.data_dir,
            batch_size=2 * self.engine.per_replica_batch,  # The original's eval batch.
            crop_size=(self.config.input_height, self.config.input_width),
            ignore_label=self.config.ignore_label,
            class_names=self.config.class_names,
            skip_bad_records=self.config.skip_bad_records,
            verbose=0,
        )
        self.progress.write_evaluation(result, self.step)
        logging.info(
            "Evaluation at step %d (epoch %.2f) on %d images, %.0f s: mIoU %.4f, pixel "
            "accuracy %.4f\n%s",
            self.step,
            self.schedule.epoch(self.step),
            result["num_images"],
            time.perf_counter() - start,
            result["miou"],
            result["pixel_accuracy"],
            report.format_result(result),
        )
        self.evaluation = result
        if self.best is not None:
            self.best.update(self.engine.evaluation_model(), result, self.step)


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
        RunLockedError: another run holds model_dir (`run_lock`).
        SaveError: a full or unwritable disk stopped a save (`files`).
    """
    config = dataclasses.replace(
        config,
        pre_trained_model=resolve_pretrained_path(
            config.pre_trained_model, config.base_architecture
        ),
    )
    engine = create_engine(config, strategy)
    # The chief holds model_dir for the whole run; the other workers write none of it.
    lock = run_lock.RunLock(config.model_dir) if engine.chief else contextlib.nullcontext()
    with lock:
        _prepare_model_dir(config, engine, lock)
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
            found = nonfinite_op_error(error, trainer.step, config.model_dir)
            if found is None:
                raise
            raise found from error  # --debug named the op.
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
            engine.check_numerics(False)
            engine.close()


def _prepare_model_dir(config, engine, lock):
    """--clean_model_dir, and what interrupted saves left, on the chief (holding `lock`)."""
    if engine.chief:
        if config.clean_model_dir:
            logging.info("--clean_model_dir: deleting %s.", config.model_dir)
            lock.clear_model_dir()  # All but the held lock file.
        removed = checkpoints.remove_unfinished_saves(config.model_dir, EXPORT_DIR)
        if removed:
            logging.info(
                "Deleted what an interrupted save left in %s: %s.",
                config.model_dir,
                ", ".join(removed),
            )
    engine.barrier()  # No worker may read model_dir before the chief cleaned it.
    os.makedirs(config.model_dir, exist_ok=True)
