"""The JAX engine's training step: one jit-compiled, stateless function (docs/design.md §6).

Imports neither TensorFlow nor anything that does: a machine with JAX and
Keras alone runs the step on the model and the loss.

The step keeps the run's state as arrays on the devices: every model variable
(`model.stateless_call`), the optimizer's variables (`stateless_apply`: TF1
momentum on the poly schedule) and the running confusion matrix. BatchNorm's
moving statistics (and dropout's seed) come back from the forward pass as
non-trainable variable updates. `sync_to_model` writes the state back into
the Keras variables, for saving, evaluating or exporting.

Data parallelism: the global batch is split along its first axis over a mesh
of all devices (`jax.sharding`), the variables are replicated, and XLA inserts
the collectives. The step is written for one device holding the global batch,
so the update is exactly the single-replica update of the global batch, and
BatchNorm's batch statistics are those of the global batch: TensorFlow's
`sync_batch_norm`, whatever that flag says (the TF engine's default normalises
per replica).
"""

import collections

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tf_pacseg.model import loss_options
from tf_pacseg.training import components
from tf_pacseg.training.config import check_choice

BATCH_AXIS = "batch"


# Copies of many arrays by one program: an op per array would lower and load
# one program per shape (60 for the tiny test model, 0.8 s on a CPU).
_copy_all = jax.jit(lambda values: [jnp.copy(value) for value in values])


def data_parallel_mesh(devices=None):
    """A one-axis mesh (`"batch"`) over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh):
    """Splits an array's first axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def prefetch_to_devices(batches, mesh, size=2):
    """Puts host batches (tuples of numpy arrays) on the devices `size` batches ahead.

    Each process passes its own part of the global batch (the global batch
    divided by the number of processes); the returned arrays are global.
    Transfers are asynchronous, so the next batches are copied while a step
    runs.
    """
    sharding = batch_sharding(mesh)

    def put(batch):
        return tuple(jax.make_array_from_process_local_data(sharding, x) for x in batch)

    queue = collections.deque()
    for batch in batches:
        queue.append(put(batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


class JaxTrainStep:
    """The JAX training step: forward, loss, backward, update, metrics, in one XLA program.

    Call it with global batches on the devices (`prefetch_to_devices`). It
    accumulates the training confusion matrix (`confusion_matrix`, reset with
    `reset_metrics`).

    Args:
        model: `PACSegmenter`, built.
        optimizer: Keras optimizer (`components.build_optimizer`).
        loss: str. `"bal"` or `"ce"`. Defaults to `"bal"`.
        ignore_label: int. Defaults to 255.
        mesh: `jax.sharding.Mesh` with a `"batch"` axis. Defaults to
            `data_parallel_mesh()`.
        class_weights: tuple of `num_classes` floats, or None (every class
            1). Defaults to `None`.
        top_k_percent_pixels: float in (0, 1]. The losses of this share of
            the global batch's pixels are kept, the largest (1: all).
            Defaults to 1.0.

    Example:

    ```python
    step = JaxTrainStep(model, optimizer)
    for images, labels in prefetch_to_devices(numpy_batches, step.mesh):
        outputs = step(images, labels)  # {"loss": ..., "learning_rate": ...}
    step.sync_to_model()
    ```
    """

    def __init__(
        self,
        model,
        optimizer,
        loss="bal",
        ignore_label=255,
        mesh=None,
        class_weights=None,
        top_k_percent_pixels=1.0,
    ):
        check_choice("loss", loss)
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.ignore_label = ignore_label
        self.num_classes = model.num_classes
        self.class_weights = loss_options.check_class_weights(class_weights, self.num_classes)
        self.top_k_percent_pixels = loss_options.check_top_k_percent_pixels(top_k_percent_pixels)
        self.mesh = data_parallel_mesh() if mesh is None else mesh
        self.variables = components.trainable_variables(model)
        optimizer.build(self.variables)
        trained = {id(v) for v in self.variables}
        # Positions of the trained variables among model.trainable_variables.
        self._trained = [i for i, v in enumerate(model.trainable_variables) if id(v) in trained]
        self._iterations = _index_of(optimizer.iterations, optimizer.variables)
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._state = None
        self._host_confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._step = jax.jit(self._stateless_step, donate_argnums=0)

    def __call__(self, images, labels):
        """One update on a global batch.

        Returns:
            dict of scalar arrays: `loss` (total), `data_loss` (BAL or CE of
            the global batch), `regularization`, `learning_rate` (the one
            this step used) and `step` (the global step after the update).
        """
        self.state, outputs = self._step(self.state, images, labels)
        return outputs

    @property
    def state(self):
        """The arrays the step updates, taken from the Keras variables on first use.

        Weights loaded into the model before the first step or `set_step`
        (pre-trained backbones, checkpoints) are thus the ones trained.
        """
        if self._state is None:
            self._state = self._state_from_model()
        return self._state

    @state.setter
    def state(self, value):
        self._state = value

    @property
    def step(self):
        """The optimizer's count of applied updates."""
        return int(self.state["optimizer"][self._iterations])

    def set_step(self, step):
        values = list(self.state["optimizer"])
        values[self._iterations] = jax.device_put(
            jnp.asarray(step, values[self._iterations].dtype), self._replicated
        )
        self.state["optimizer"] = values

    def confusion_matrix(self):
        """int64 [C, C]: the running training confusion matrix."""
        # int32 on the devices; folded into int64 here before it could overflow.
        self._host_confusion += np.asarray(self.state["confusion"], np.int64)
        self.state["confusion"] = self._zero_confusion()
        return self._host_confusion.copy()

    def reset_metrics(self):
        self._host_confusion[:] = 0
        self.state["confusion"] = self._zero_confusion()

    def load_from_model(self):
        """Takes the state from the Keras variables again (after loading weights into them)."""
        self._state = None

    def sync_to_model(self):
        """Writes the state into the model's and the optimizer's Keras variables."""
        if self._state is None:
            return  # The variables are the state.
        pairs = (
            (self.model.trainable_variables, self.state["trainable"]),
            (self.model.non_trainable_variables, self.state["non_trainable"]),
            (self.optimizer.variables, self.state["optimizer"]),
        )
        for variables, values in pairs:
            # This process's copy (saving, evaluation and export run per
            # process), copied: the step donates (frees) the state's buffers.
            copies = _copy_all([value.addressable_data(0) for value in values])
            for variable, copy in zip(variables, copies, strict=True):
                variable.assign(copy)

    def _zero_confusion(self):
        zeros = jnp.zeros((self.num_classes, self.num_classes), "int32")
        return jax.device_put(zeros, self._replicated)

    def _state_from_model(self):
        def values(variables):
            return _copy_all([v.value for v in variables])

        state = {
            "trainable": values(self.model.trainable_variables),
            "non_trainable": values(self.model.non_trainable_variables),
            "optimizer": values(self.optimizer.variables),
            "confusion": jnp.zeros((self.num_classes, self.num_classes), "int32"),
        }
        return jax.device_put(state, self._replicated)

    def _stateless_step(self, state, images, labels):
        optimizer = self.optimizer
        with keras.StatelessScope(
            state_mapping=list(zip(optimizer.variables, state["optimizer"], strict=True))
        ):
            learning_rate = jnp.asarray(optimizer.learning_rate, "float32")
            loss_scale = optimizer.scale_loss(jnp.float32(1.0))  # 1 unless float16.
        # The global batch's count: the step sees the whole (sharded) batch.
        count = components.weighted_pixel_count(
            labels, self.ignore_label, self.class_weights, self.top_k_percent_pixels
        )

        def scaled_objective(trained, trainable, non_trainable):
            trainable = list(trainable)
            for index, value in zip(self._trained, trained, strict=True):
                trainable[index] = value
            logits, non_trainable, regularization_losses = self.model.stateless_call(
                trainable, non_trainable, images, training=True, return_losses=True
            )
            objective, data_loss, regularization = components.objective(
                labels,
                logits,
                regularization_losses,
                count,
                loss=self.loss,
                num_classes=self.num_classes,
                ignore_label=self.ignore_label,
                class_weights=self.class_weights,
                top_k_percent_pixels=self.top_k_percent_pixels,
            )
            auxiliary = (logits, non_trainable, data_loss, regularization)
            return objective * loss_scale, auxiliary

        trained = [state["trainable"][i] for i in self._trained]
        gradient_fn = jax.value_and_grad(scaled_objective, has_aux=True)
        (_, auxiliary), gradients = gradient_fn(trained, state["trainable"], state["non_trainable"])
        logits, non_trainable, data_loss, regularization = auxiliary
        trained, optimizer_values = optimizer.stateless_apply(
            state["optimizer"], gradients, trained
        )
        trainable = list(state["trainable"])
        for index, value in zip(self._trained, trained, strict=True):
            trainable[index] = value
        confusion = components.batch_confusion(labels, logits, self.num_classes, self.ignore_label)
        new_state = {
            "trainable": trainable,
            "non_trainable": non_trainable,
            "optimizer": optimizer_values,
            "confusion": state["confusion"] + confusion,
        }
        outputs = {
            "loss": data_loss + regularization,
            "data_loss": data_loss,
            "regularization": regularization,
            "learning_rate": learning_rate,
            "step": optimizer_values[self._iterations],
        }
        return new_state, outputs


def _index_of(variable, variables):
    (index,) = [i for i, v in enumerate(variables) if v is variable]
    return index
