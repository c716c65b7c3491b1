"""Training: one loop, two engines (TensorFlow `tf.distribute` and JAX).

The engine follows the Keras backend (`KERAS_BACKEND=tensorflow` or `jax`);
both train the same model with the same objective, optimizer and outputs
(docs/design.md §6).

- `config`: `TrainConfig` (every setting), `TrainResult`.
- `components`: model, optimizer, trained variables and loss, shared by both engines.
- `loop`: `train`, the backend-neutral loop; `schedule`: when it logs, saves,
  evaluates and stops.
- `engine`: `Engine`, the contract both engines fulfil, and `create_engine`.
- `checkpoints`: both engines' checkpoint formats (saving, resuming) and
  saves that a full disk stops (`SaveError`).
- `run_lock`: `RunLock`, one training run per model_dir.
- `classes`: the class names and weights a run reads from its dataset;
  `best`: `model_dir/best/`, the model of the best validation mIoU.
- `initialization` (+ `pretrained`): how a fresh run starts: the backbone
  (`pre_trained_model`) or the whole network (`init_checkpoint`).
- `debug`: `--debug`'s report of the op that made a NaN or inf.
- `tf_engine` (+ `tf_step`, its step): the TensorFlow engine; `jax_engine`
  (+ `jax_step`): the JAX one.

The names below load their modules on first use, so that importing the
package pulls in neither TensorFlow nor JAX.

Example:

```python
from tf_pacseg import training
training.train(training.TrainConfig(data_dir="dataset", model_dir="model", pre_trained_model=""))
```
"""

from tf_pacseg.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tf_pacseg.training.config": (
            "TrainConfig",
            "TrainResult",
            "NonFiniteLossError",
            "LOSSES",
            "MIXED_PRECISION_POLICIES",
        ),
        "tf_pacseg.training.components": (
            "build_training_model",
            "build_optimizer",
            "trainable_variables",
            "weighted_pixel_count",
        ),
        "tf_pacseg.training.loop": ("train",),
        "tf_pacseg.training.engine": ("Engine", "create_engine"),
        "tf_pacseg.training.pretrained": ("resolve_pretrained_path", "load_pretrained"),
        "tf_pacseg.training.initialization": ("load_init_checkpoint",),
        "tf_pacseg.training.run_lock": ("RunLock", "RunLockedError"),
        "tf_pacseg.files": ("SaveError",),
        "tf_pacseg.training.tf_step": ("TrainStep", "agree_on_overflow"),
    },
)
