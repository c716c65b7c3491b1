"""In-process training runs of a tiny model, watched step by step (resume and option tests)."""

import os
import signal

import keras
import numpy as np

from tf_pacseg import training
from tf_pacseg.training import loop

_create_engine = loop.create_engine


# train.py's flags for the same tiny model on 33x33 crops (subprocess runs of the script).
TINY_TRAIN_FLAGS = (
    "--num_gpu=0",
    "--base_architecture=resnet_v1_50",
    "--units_per_block=1,1,1,1",
    "--num_classes=5",
    "--batch_size=2",
    "--input_height=33",
    "--input_width=33",
    "--pre_trained_model=",
)


def tiny_config(data_dir, model_dir, **overrides):
    """A `TrainConfig` of a tiny model on 33x33 crops, batch 2, 2 epochs, seeded."""
    settings = dict(
        num_gpu=0,
        base_architecture="resnet_v1_50",
        units_per_block=(1, 1, 1, 1),
        num_classes=5,
        batch_size=2,
        input_height=33,
        input_width=33,
        pre_trained_model="",
        data_dir=data_dir,
        model_dir=model_dir,
        train_epochs=2,
        epochs_per_eval=0,
        log_every_n_steps=100,
        save_checkpoints_steps=100,
        seed=1,
    )
    return training.TrainConfig(**{**settings, **overrides})


class Recorder:
    """Watches the loop's engine: records each step's batch (first replica), snapshots the
    weights after step `snapshot_at` of this run, and sends SIGTERM (the loop's stop) after
    step `stop_after`. Subclasses add `before_step`/`after_step`.

    The engine exports nothing: the export comes after the last step, which these runs
    compare, and costs seconds (test_train_script.py checks it)."""

    def __init__(self, stop_after=None, snapshot_at=None):
        self.stop_after = stop_after
        self.snapshot_at = snapshot_at
        self.batches = []
        self.weights = None

    def before_step(self, engine):
        pass

    def after_step(self, engine):
        pass

    def create_engine(self, config, strategy=None):
        engine = _create_engine(config, strategy)
        train_step = engine.train_step

        def watched_step(images, labels):
            self.batches.append(
                (np.asarray(engine.first_replica(images)), np.asarray(engine.first_replica(labels)))
            )
            self.before_step(engine)
            outputs = train_step(images, labels)
            self.after_step(engine)
            if len(self.batches) == self.snapshot_at:
                model = engine.evaluation_model()
                self.weights = {v.path: np.array(v.value) for v in model.weights}
            if len(self.batches) == self.stop_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return outputs

        engine.train_step = watched_step
        engine.export = lambda export_dir, model=None: None
        return engine


def train_watched(monkeypatch, recorder, config):
    """`training.train(config)` with `recorder` watching, as in a new process."""
    # The JAX engine's checkpoints name variables by their paths, which hold
    # Keras' per-process counters (seed_generator_1, ...).
    keras.backend.clear_session()
    with monkeypatch.context() as patch:
        patch.setattr(loop, "create_engine", recorder.create_engine)
        return training.train(config)
