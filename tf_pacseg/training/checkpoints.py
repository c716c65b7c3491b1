"""Checkpoints of a run and the final export.

Every save writes a resumable checkpoint (weights, optimizer variables, step)
in `model_dir` and, on the chief, `model_dir/model.weights.h5` + `model.json`
(read by evaluate.py and predict.py on either backend). A save refuses
non-finite weights, so the last good checkpoint survives a diverging run.
"""

import os
import shutil

import keras
import tensorflow as tf
from absl import logging

from tf_pacseg import distribute, saving
from tf_pacseg.training.config import NonFiniteLossError

CHECKPOINT_NAME = "ckpt"


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


class TFCheckpointer:
    """Checkpoints of the run: TF2 checkpoint on every worker, weights on the chief."""

    def __init__(self, model, optimizer, strategy, config):
        self.model = model
        self.strategy = strategy
        self.config = config
        self.chief = distribute.is_chief(strategy)
        # Dropout's seed too (Keras leaves it out of the model's checkpoint), so
        # that a resumed run draws what the uninterrupted one would.
        weights = {id(v) for v in model.weights}
        random_state = [v for v in model.variables if id(v) not in weights]
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, random_state=random_state
        )
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
