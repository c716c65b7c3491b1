"""The TensorFlow engine: `tf_step.TrainStep` under a `tf.distribute` strategy (docs/design.md §6).

TensorFlow-only module. One machine trains on its GPUs (`MirroredStrategy`)
or several together (`MultiWorkerMirroredStrategy`, `TF_CONFIG`): every worker
runs the same loop, reads its share of each global batch and writes each
checkpoint (the non-chief ones to a scratch `write_dir`, removed at the end),
and the chief's lands in `model_dir`.
"""

import tensorflow as tf

from tf_pacseg.data import malloc, pipelines
from tf_pacseg.export import saved_model
from tf_pacseg.training import checkpoints, components, distribute
from tf_pacseg.training.engine import Engine
from tf_pacseg.training.tf_step import TrainStep


class AnyWorker:
    """Whether a flag is true on any worker: one small all-reduce across workers.

    Every worker must call it at the same point (it is a collective).
    """

    def __init__(self, strategy):
        def reduce_flag(flag):
            value = strategy.run(tf.identity, args=(flag,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        self._reduce = tf.function(reduce_flag, autograph=False)

    def __call__(self, flag):
        return bool(self._reduce(tf.constant(float(flag))) > 0)


class TFEngine(Engine):
    """The TensorFlow side of a run: strategy, model, step, input and checkpoints.

    Checkpoints are `tf.train.Checkpoint`s (`checkpoints.TFCheckpointer`).

    Args:
        config: `TrainConfig`.
        strategy: the `tf.distribute.Strategy`.
    """

    name = "tensorflow"

    def __init__(self, config, strategy):
        super().__init__(
            config,
            chief=distribute.is_chief(strategy),
            multi_worker=distribute.is_multi_worker(strategy),
            per_replica_batch=distribute.check_batch_size(config.batch_size, strategy),
            write_dir=distribute.write_dir(config.model_dir, strategy),
        )
        self.strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync
        self._any_worker = AnyWorker(strategy) if self.multi_worker else None
        # Made by `build`.
        self.optimizer = self.step_fn = self.checkpointer = None

    def describe(self):
        """'<strategy> on R replica(s) (this worker: <devices>)'."""
        return (
            f"{distribute.describe(self.strategy)} on {self.num_replicas} replica(s) (this "
            f"worker: {', '.join(self.strategy.extended.worker_devices)})"
        )

    def build(self):
        config = self.config
        with self.strategy.scope():
            self.model = components.build_training_model(config)
            self.optimizer = components.build_optimizer(config)
        self.step_fn = TrainStep(
            self.model,
            self.optimizer,
            self.strategy,
            jit_compile=config.jit_compile,
            **components.objective_arguments(config),
        )
        self.checkpointer = checkpoints.TFCheckpointer(
            self.model, self.optimizer, self.strategy, config
        )
        return self.model

    def barrier(self):
        if self.multi_worker:
            self._any_worker(False)

    def check_numerics(self, enabled):
        if enabled:
            tf.debugging.enable_check_numerics()
        elif self.config.debug:
            tf.debugging.disable_check_numerics()

    def close(self):
        distribute.remove_write_dir(self.write_dir, self.strategy)

    def latest_checkpoint(self):
        return checkpoints.latest_checkpoint(self.config.model_dir, self.name)

    def restore(self):
        return self.checkpointer.restore_latest()

    def save(self, step, input_position):
        return self.checkpointer.save(step, input_position)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def set_step(self, step):
        self.optimizer.iterations.assign(step)

    def batches(self, files, start_step=0, skip_list=None):
        config = self.config
        dataset = pipelines.distribute_dataset(
            self.strategy,
            pipelines.train_dataset,
            files,
            config.batch_size,
            start_step=start_step,
            skip_list=skip_list,
            **components.train_input_arguments(config),
        )
        return malloc.iterate(dataset)  # tf.distribute's iterators run a generator op.

    def train_step(self, images, labels):
        return self.step_fn(images, labels)

    def reset_metrics(self):
        self.step_fn.reset_metrics()

    def confusion_matrix(self):
        return self.step_fn.confusion_matrix.numpy()

    def first_replica(self, tensor):
        return self.strategy.experimental_local_results(tensor)[0]

    def evaluation_model(self):
        return self.model

    def any_worker(self, flag):
        return self._any_worker(flag) if self.multi_worker else bool(flag)

    def export(self, export_dir, model=None):
        """Every worker writes; only the chief's lands in model_dir."""
        model = self.model if model is None else model
        with checkpoints.reporting_save_errors("the inference SavedModel", export_dir, model):
            saved_model.write_saved_model(model, export_dir)
        return "the inference SavedModel"
