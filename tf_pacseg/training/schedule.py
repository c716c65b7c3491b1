"""When things happen in a run: its steps, the actions due after each, and stop requests.

`Schedule` is the original's Estimator cadence (docs/design.md §6): a log line
every `log_every_n_steps`, a checkpoint every `save_checkpoints_steps` and
before each evaluation, an evaluation every `epochs_per_eval` epochs, the end
after `max_iter` steps or `train_epochs` epochs; `StopRequest` turns
SIGINT/SIGTERM into a save and a stop at the next step.
"""

import dataclasses
import signal
import threading

from absl import logging


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


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The run's steps: where it starts and ends, and when each after-step action is due.

    Attributes:
        first_step: int. `initial_global_step`: where the poly schedule and
            the epochs count from.
        last_step: int. After `max_iter` steps or `train_epochs` epochs.
        steps_per_epoch: int.
        log_every: int. `log_every_n_steps`.
        save_every: int. `save_checkpoints_steps`.
        eval_every: int. Steps between evaluations (0: none during training).
    """

    first_step: int
    last_step: int
    steps_per_epoch: int
    log_every: int
    save_every: int
    eval_every: int

    @classmethod
    def of(cls, config, num_examples):
        """The schedule of `config` over `num_examples` training examples."""
        steps_per_epoch = num_examples // config.batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"The training records in {config.data_dir!r} hold {num_examples} examples, "
                f"fewer than one batch (--batch_size={config.batch_size})."
            )
        first_step = config.initial_global_step
        return cls(
            first_step=first_step,
            last_step=first_step + min(config.max_iter, config.train_epochs * steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            log_every=config.log_every_n_steps,
            save_every=config.save_checkpoints_steps,
            eval_every=config.epochs_per_eval * steps_per_epoch,
        )

    def epoch(self, step):
        """float. Epochs trained at `step`."""
        return (step - self.first_step) / self.steps_per_epoch

    def starts_epoch(self, step):
        return (step - self.first_step) % self.steps_per_epoch == 0

    def due(self, step):
        """(log, save, evaluate): the bools of the actions due after `step`."""
        log = step % self.log_every == 0 or step == self.last_step
        # Like the original's Estimator, save before each evaluation.
        evaluate = bool(self.eval_every) and (step - self.first_step) % self.eval_every == 0
        save = step % self.save_every == 0 or evaluate
        return log, save, evaluate


@dataclasses.dataclass(frozen=True)
class StepDone:
    """A step's global batch (from `Engine.batches`), its outputs (`Engine.train_step`), and
    which after-step actions are due (`Schedule.due`)."""

    images: object
    labels: object
    outputs: dict
    log: bool
    save: bool
    evaluate: bool
