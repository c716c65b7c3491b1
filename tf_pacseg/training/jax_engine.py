"""The JAX engine: `jax_step` fed by tf.data, with `.npz` checkpoints (docs/design.md §6).

Input stays tf.data on the CPU (TensorFlow sees no GPU, so JAX has the
accelerators to itself), read as numpy and put on the devices two batches
ahead. The step runs data parallel over every device of every process
(`jax_step`).

Several machines: set `JAX_COORDINATOR_ADDRESS` (host:port of process 0),
`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` on each and run the same command on
all of them; `jax.distributed.initialize` joins them, every process reads its
share of each global batch, and process 0 writes `model_dir` (a path all can
read).
"""

import dataclasses
import os

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from jax.experimental import multihost_utils

from tf_pacseg import files
from tf_pacseg.data import pipelines
from tf_pacseg.export import saved_model
from tf_pacseg.training import checkpoints, components, jax_step
from tf_pacseg.training.engine import Engine

_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


def initialize_processes():
    """Joins the other processes named by the environment (`jax.distributed.initialize`)."""
    if not os.environ.get(_COORDINATOR) or jax.distributed.is_initialized():
        return
    try:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
        process_id = int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"{_COORDINATOR} is set: set JAX_NUM_PROCESSES and JAX_PROCESS_ID (0 .. n-1) "
            f"to integers too ({error!r})."
        ) from error
    jax.distributed.initialize(
        coordinator_address=os.environ[_COORDINATOR],
        num_processes=num_processes,
        process_id=process_id,
    )


def _hide_gpus_from_tensorflow():
    """tf.data runs on the CPU: TensorFlow must not take the GPUs' memory from JAX."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already started (e.g. wrote records in this process).
        if tf.config.list_logical_devices("GPU"):
            logging.warning(
                "TensorFlow started before training and holds GPUs; JAX may lack memory. "
                "Set TF_FORCE_GPU_ALLOW_GROWTH=true, or train in a fresh process."
            )


class JaxEngine(Engine):
    """The JAX side of a run: mesh, model, step, input and `.npz` checkpoints.

    Checkpoints are `ckpt-<step>.npz` files (`checkpoints.ArrayCheckpointer`).

    Args:
        config: `TrainConfig`. `num_gpu` and `jit_compile` do not apply (every
            device is used, the whole step is compiled); `sync_batch_norm`
            neither: batch statistics are always those of the global batch.
    """

    name = "jax"

    def __init__(self, config):
        _hide_gpus_from_tensorflow()
        initialize_processes()
        mesh = jax_step.data_parallel_mesh()
        if config.batch_size % mesh.size:
            raise ValueError(
                f"--batch_size={config.batch_size} is the global batch; it must be a positive "
                f"multiple of the number of devices ({mesh.size})."
            )
        super().__init__(
            config,
            chief=jax.process_index() == 0,
            multi_worker=jax.process_count() > 1,
            per_replica_batch=config.batch_size // mesh.size,
            write_dir=config.model_dir,
        )
        self.mesh = mesh
        self.num_replicas = mesh.size
        # Made by `build`.
        self.optimizer = self.step_fn = self.checkpointer = None

    def describe(self):
        devices = jax.devices()
        return (
            f"jax.sharding data parallelism on {len(devices)} {devices[0].platform} "
            f"device(s) in {jax.process_count()} process(es)"
        )

    def build(self):
        config = self.config
        if config.sync_batch_norm:
            logging.info("--sync_batch_norm: the JAX engine's batch statistics are global anyway.")
        # Synchronised BatchNorm is a tf.distribute operation; the global
        # batch's statistics come from the sharded computation itself.
        self.model = components.build_training_model(
            dataclasses.replace(config, sync_batch_norm=False)
        )
        self.optimizer = components.build_optimizer(config)
        self.step_fn = jax_step.JaxTrainStep(
            self.model,
            self.optimizer,
            mesh=self.mesh,
            **components.objective_arguments(config),
        )
        self.checkpointer = checkpoints.ArrayCheckpointer(self.step_fn, config, self.chief)
        return self.model

    def barrier(self):
        if self.multi_worker:
            multihost_utils.sync_global_devices("tf_pacseg")

    def check_numerics(self, enabled):
        jax.config.update("jax_debug_nans", bool(enabled))

    def close(self):
        pass  # No scratch directory: only process 0 writes.

    def latest_checkpoint(self):
        return checkpoints.latest_checkpoint(self.config.model_dir, self.name)

    def restore(self):
        return self.checkpointer.restore_latest()

    def save(self, step, input_position):
        return self.checkpointer.save(step, input_position)

    @property
    def step(self):
        return self.step_fn.step

    def set_step(self, step):
        self.step_fn.set_step(step)

    def batches(self, files, start_step=0, skip_list=None):
        """Each process reads its share; put on the devices two batches ahead."""
        config = self.config
        context = tf.distribute.InputContext(
            num_input_pipelines=jax.process_count(),
            input_pipeline_id=jax.process_index(),
            num_replicas_in_sync=jax.process_count(),
        )
        dataset = pipelines.train_dataset(
            files,
            config.batch_size,
            input_context=context,
            start_step=start_step,
            skip_list=skip_list,
            **components.train_input_arguments(config),
        )
        return jax_step.prefetch_to_devices(dataset.as_numpy_iterator(), self.mesh)

    def train_step(self, images, labels):
        return self.step_fn(images, labels)

    def reset_metrics(self):
        self.step_fn.reset_metrics()

    def confusion_matrix(self):
        return self.step_fn.confusion_matrix()

    def first_replica(self, array):
        """The first local device's part of a global batch, as numpy."""
        return np.asarray(array.addressable_shards[0].data)

    def evaluation_model(self):
        self.step_fn.sync_to_model()
        return self.model

    def any_worker(self, flag):
        if not self.multi_worker:
            return bool(flag)
        return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))

    def export(self, export_dir, model=None):
        """The inference SavedModel where TensorFlow can trace the JAX model, else nothing."""
        model = self.evaluation_model() if model is None else model
        if not self.chief:
            return None
        try:
            with checkpoints.reporting_save_errors("the inference SavedModel", export_dir, model):
                saved_model.write_saved_model(model, export_dir)
        except files.SaveError:
            raise  # A full or unwritable disk stops the run, as on TensorFlow.
        except Exception as error:  # noqa: BLE001 - export is optional on JAX.
            logging.warning(
                "No SavedModel export (%s: %s); model.weights.h5 + model.json in %s hold "
                "the trained model for either backend.",
                type(error).__name__,
                error,
                self.config.model_dir,
            )
            return None
        return "the inference SavedModel"
