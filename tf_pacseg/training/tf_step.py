"""The TensorFlow engine's training step, under `tf.distribute` (docs/design.md §6).

TensorFlow-only module. Data parallelism: the global batch is split over the
replicas of a `MirroredStrategy` (one machine) or `MultiWorkerMirroredStrategy`
(`TF_CONFIG`); the loss is normalised by the global batch's weighted-pixel
count and the gradients are summed once, so R replicas make the update of one
replica on the global batch (`components.objective`). The original's towers
averaged per-tower means instead; the two agree when the towers weigh the
same number of pixels. BatchNorm normalises with per-replica statistics, as
the original's towers did, unless `sync_batch_norm`. Each replica updates its
own copy of the moving statistics and checkpoints keep the first replica's
(the original's towers updated one shared copy in turn).
"""

import keras
import tensorflow as tf

from tf_pacseg.model import loss_options
from tf_pacseg.training import components, distribute
from tf_pacseg.training.config import check_choice


def agree_on_overflow(gradients, context):
    """Makes every replica's gradients non-finite when any replica's are.

    Keras' `LossScaleOptimizer` decides whether to skip a step from the
    gradients before they are summed over replicas, looking at one replica's
    (or each replica on its own): an overflow on another replica would be
    summed into the update, or the replicas would disagree. Call it in
    replica context, on the gradients passed to the optimizer.

    Args:
        gradients: list of tensors (or None) of this replica.
        context: the `tf.distribute.ReplicaContext`.

    Returns:
        The gradients, all multiplied by NaN if any replica had a non-finite one.
    """
    present = [g for g in gradients if g is not None]
    overflow = tf.cast(
        tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])),
        tf.float32,
    )
    overflow = context.all_reduce(tf.distribute.ReduceOp.SUM, overflow)
    factor = tf.where(overflow > 0, float("nan"), 1.0)
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]


class TrainStep:
    """The distributed training step: forward, loss, backward, update, metrics.

    Call it with distributed (per-replica) batches from
    `strategy.distribute_datasets_from_function`. It also accumulates the
    training confusion matrix in `confusion_matrix` (reset with
    `reset_metrics`).

    Each replica minimises its share of the global-batch loss
    (`components.objective`, with the weighted-pixel count summed over
    replicas before the forward pass); the Keras optimizer sums the replicas'
    gradients once (all-reduce in `apply`). Each replica's objective is
    already scaled before backpropagation, so this stays exact when
    synchronised BatchNorm carries gradients across replicas.

    Args:
        model: `PACSegmenter`, built under `strategy.scope()`.
        optimizer: Keras optimizer, created under `strategy.scope()`.
        strategy: the `tf.distribute.Strategy`.
        loss: str. `"bal"` or `"ce"`. Defaults to `"bal"`.
        ignore_label: int. Defaults to 255.
        jit_compile: bool. XLA-compile each replica's forward and backward
            pass (the update stays outside XLA). Defaults to `False`.
        class_weights: tuple of `num_classes` floats, or None (every class
            1). Defaults to `None`.
        top_k_percent_pixels: float in (0, 1]. Each replica keeps the losses
            of this share of its pixels, the largest (1: all). Defaults to 1.0.

    Example:

    ```python
    step = TrainStep(model, optimizer, strategy)
    for images, labels in distributed_dataset:
        outputs = step(images, labels)  # {"loss": ..., "learning_rate": ...}
    ```
    """

    def __init__(
        self,
        model,
        optimizer,
        strategy,
        loss="bal",
        ignore_label=255,
        jit_compile=False,
        class_weights=None,
        top_k_percent_pixels=1.0,
    ):
        check_choice("loss", loss)
        if (
            jit_compile
            and model.sync_batch_norm
            and not distribute.supports_collectives_in_xla(strategy)
        ):
            raise ValueError(
                "jit_compile with sync_batch_norm needs cross-replica sums inside XLA, which "
                "MirroredStrategy only has on GPUs. Drop one of them."
            )
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.loss = loss
        self.ignore_label = ignore_label
        self.jit_compile = jit_compile
        self.num_classes = model.num_classes
        self.class_weights = loss_options.check_class_weights(class_weights, self.num_classes)
        self.top_k_percent_pixels = loss_options.check_top_k_percent_pixels(top_k_percent_pixels)
        self.variables = components.trainable_variables(model)
        self._loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        with strategy.scope():
            optimizer.build(self.variables)
        # The running confusion matrix, updated in cross-replica context.
        with tf.init_scope():
            self.confusion_matrix = tf.Variable(
                tf.zeros([self.num_classes, self.num_classes], tf.int64), trainable=False
            )
        # Traced as written, without autograph: seconds sooner (docs/design.md §6).
        self._step = tf.function(self._distributed_step, autograph=False)

    def __call__(self, images, labels):
        """One update on a distributed batch.

        Returns:
            dict of scalar tensors: `loss` (total), `data_loss` (BAL or CE of
            the global batch), `regularization`, `learning_rate` (the one
            this step used) and `step` (the global step after the update).
        """
        return self._step(images, labels)

    def reset_metrics(self):
        self.confusion_matrix.assign(tf.zeros_like(self.confusion_matrix))

    def _gradients(self, images, labels, global_count):
        """Gradients of this replica's share of the global-batch loss."""
        num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)  # (batch, height, width, classes)
            objective, data_loss, regularization = components.objective(
                labels,
                logits,
                self.model.losses,
                global_count,
                num_replicas=num_replicas,
                loss=self.loss,
                num_classes=self.num_classes,
                ignore_label=self.ignore_label,
                class_weights=self.class_weights,
                top_k_percent_pixels=self.top_k_percent_pixels,
            )
            scaled = self.optimizer.scale_loss(objective)  # Loss scaling (float16).
        gradients = tape.gradient(scaled, self.variables)
        confusion = components.batch_confusion(labels, logits, self.num_classes, self.ignore_label)
        return gradients, data_loss, regularization, confusion

    def _replica_step(self, images, labels):
        context = tf.distribute.get_replica_context()
        count = components.weighted_pixel_count(
            labels, self.ignore_label, self.class_weights, self.top_k_percent_pixels
        )
        if context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        gradients_fn = self._gradients
        if self.jit_compile:
            # Created while tracing each replica: each gets its own XLA
            # function, bound to its own copies of the variables.
            gradients_fn = tf.function(gradients_fn, jit_compile=True, autograph=False)
        gradients, data_loss, regularization, confusion = gradients_fn(images, labels, count)
        if self._loss_scaling and context.num_replicas_in_sync > 1:
            gradients = agree_on_overflow(gradients, context)
        # Keras' optimizer sums the gradients over replicas (all-reduce SUM).
        self.optimizer.apply(gradients, self.variables)
        return {
            "data_loss": data_loss,
            "regularization": regularization,
            "confusion_matrix": confusion,
        }

    def _distributed_step(self, images, labels):
        learning_rate = tf.cast(self.optimizer.learning_rate, tf.float32)
        outputs = self.strategy.run(self._replica_step, args=(images, labels))
        reduce = self.strategy.reduce
        data_loss = reduce(tf.distribute.ReduceOp.SUM, outputs["data_loss"], axis=None)
        regularization = reduce(tf.distribute.ReduceOp.MEAN, outputs["regularization"], axis=None)
        confusion = reduce(tf.distribute.ReduceOp.SUM, outputs["confusion_matrix"], axis=None)
        self.confusion_matrix.assign_add(tf.cast(confusion, tf.int64))
        return {
            "loss": data_loss + regularization,
            "data_loss": data_loss,
            "regularization": regularization,
            "learning_rate": learning_rate,
            "step": tf.identity(self.optimizer.iterations),
        }
