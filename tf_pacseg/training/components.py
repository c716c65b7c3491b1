"""What both training engines share: model, optimizer, trained variables and the objective.

Written once in `keras.ops` (no TensorFlow import), so the TensorFlow step
(`tf_step`) and the JAX step (`jax_step`) train the same thing
(docs/design.md §6):

- BatchNorm: `fine_tune_batch_norm=True` normalises with batch statistics,
  updates the moving statistics and leaves beta/gamma untrained; `False`
  uses the moving statistics and trains beta/gamma (`trainable_variables`).
- Loss: boundary-aware loss (or plain cross entropy), with optional class
  weights and hardest-pixel selection, normalised by the global batch's
  weighted-pixel count, plus slim-style L2 on every conv kernel
  (`objective`).
- TF1 momentum on the poly schedule counted from `initial_global_step`
  (`build_optimizer`).
"""

import keras
from keras import ops

from tf_pacseg import constants
from tf_pacseg.data import class_names
from tf_pacseg.inference import metrics
from tf_pacseg.model import loss_options, losses
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.training.config import AUTO_CLASS_WEIGHTS
from tf_pacseg.training.optimizers import PolyDecay, TF1Momentum

# Variables the original leaves untrained when fine-tuning BatchNorm.
_BATCH_NORM_PARAMETERS = ("gamma", "beta")


def build_training_model(config):
    """The `PACSegmenter` of `config` (under the TF engine, call it in the strategy's scope)."""
    return build_model(
        base_architecture=config.base_architecture,
        head=config.head,
        output_stride=config.output_stride,
        num_classes=config.num_classes,
        batch_norm_decay=config.batch_norm_decay,
        weight_decay=config.weight_decay,
        fine_tune_batch_norm=config.fine_tune_batch_norm,
        sync_batch_norm=config.sync_batch_norm,
        units_per_block=config.units_per_block,
    )


def build_optimizer(config):
    """TF1 momentum on the poly schedule; wrapped for loss scaling under float16."""
    schedule = PolyDecay(
        initial_learning_rate=config.initial_learning_rate,
        max_iter=config.max_iter,
        end_learning_rate=config.end_learning_rate,
        power=config.power,
        initial_step=config.initial_global_step,
    )
    optimizer = TF1Momentum(learning_rate=schedule, momentum=config.momentum)
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def train_input_arguments(config):
    """The keyword arguments of `pipelines.train_dataset` that `config` sets."""
    shared = ("min_scale", "max_scale", "ignore_label", "shuffle_buffer", "seed")
    return dict(
        crop_size=(config.input_height, config.input_width),
        repeat=True,
        **{name: getattr(config, name) for name in shared},
    )


def trainable_variables(model):
    """The variables the original trains: all but BatchNorm's when fine-tuning it.

    With `fine_tune_batch_norm` the original excluded every variable named
    beta or gamma (their moving statistics still update).
    """
    if not model.fine_tune_batch_norm:
        return list(model.trainable_variables)
    return [v for v in model.trainable_variables if v.name not in _BATCH_NORM_PARAMETERS]


def objective_arguments(config):
    """The loss settings of `config`: keyword arguments of both engines' steps.

    Raises:
        ValueError: `class_weights="auto"` not yet resolved from the records
            (`classes.resolve_classes`, done at start-up).
    """
    if config.class_weights == AUTO_CLASS_WEIGHTS:
        raise ValueError(
            "class_weights='auto' must be resolved into one weight per class before the step "
            "is built (tf_pacseg.training.classes.resolve_classes)."
        )
    return dict(
        loss=config.loss,
        ignore_label=config.ignore_label,
        class_weights=config.class_weights,
        top_k_percent_pixels=config.top_k_percent_pixels,
    )


def weighted_pixel_count(
    labels, ignore_label=constants.IGNORE_LABEL, class_weights=None, top_k_percent_pixels=1.0
):
    """The loss's denominator #{i : w_i·m_i ≠ 0}, from the labels alone.

    The boundary-aware weights are at least 0.5 (and plain CE's are 1), so
    the pixels with a non-zero weight are exactly those not ignored (and,
    with `class_weights`, whose class weight is not 0). Knowing it before the
    forward pass lets every replica divide by the global count without a
    cross-replica sum inside the (possibly compiled) backward pass. With
    `top_k_percent_pixels` < 1 it is min(k, that count), each replica's k
    counted on its own pixels (`losses.boundary_aware_loss`).
    """
    valid = ops.not_equal(labels, ignore_label)
    if class_weights is None:
        count = ops.sum(ops.cast(valid, "float32"))
    else:
        weights = loss_options.pixel_class_weights(labels, class_weights, len(class_weights))
        count = ops.sum(ops.cast(ops.logical_and(valid, weights != 0.0), "float32"))
    if top_k_percent_pixels == 1.0:
        return count
    k = loss_options.top_k_pixel_count(loss_options.batch_pixel_count(labels), top_k_percent_pixels)
    return ops.minimum(count, ops.cast(k, "float32"))


def objective(
    labels,
    logits,
    regularization_losses,
    global_count,
    num_replicas=1,
    loss="bal",
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    class_weights=None,
    top_k_percent_pixels=1.0,
):
    """One replica's share of the global-batch loss.

    Replica r minimises Σ_r / N + regularization / R, where Σ_r is its
    weighted cross-entropy sum and N the weighted-pixel count of the global
    batch. Summing the replicas' gradients gives the gradient of
    Σ_r Σ_r / N + regularization: the single-replica loss of the global batch.

    Args:
        labels: int [N, H, W, 1] (this replica's).
        logits: float [N, H, W, num_classes].
        regularization_losses: list of scalars (the model's L2 terms).
        global_count: float32 scalar. `weighted_pixel_count` of the global
            batch, with the same `class_weights` and `top_k_percent_pixels`.
        num_replicas: int. Replicas the gradients are summed over. Defaults to 1.
        loss: str. `"bal"` or `"ce"`. Defaults to `"bal"`.
        num_classes: int. Defaults to 21.
        ignore_label: int. Defaults to 255.
        class_weights: tuple of `num_classes` floats, or None. Defaults to `None`.
        top_k_percent_pixels: float in (0, 1]. Defaults to 1.0.

    Returns:
        (objective, data loss, regularization), float32 scalars.
    """
    weighted_sum, _ = losses.boundary_aware_loss_terms(
        labels,
        logits,
        num_classes=num_classes,
        ignore_label=ignore_label,
        use_boundary_weights=loss == "bal",
        class_weights=class_weights,
        top_k_percent_pixels=top_k_percent_pixels,
    )
    data_loss = ops.divide_no_nan(weighted_sum, global_count)
    regularization = ops.convert_to_tensor(0.0, "float32")
    for term in regularization_losses:
        regularization = regularization + ops.cast(term, "float32")
    return data_loss + regularization / num_replicas, data_loss, regularization


def model_metadata(config, step):
    """What model.json holds beside the architecture: the step and the class names.

    The names are left out when they are `class_names.default_class_names`,
    which a model without names gets anyway: a run that names no classes
    writes the model.json it always wrote.

    Raises:
        ValueError: `class_names` still a spec (a file, "voc"), not resolved
            into names at start-up (`classes.resolve_classes`).
    """
    metadata = {"step": int(step)}
    names = config.class_names
    if isinstance(names, str):
        raise ValueError(
            f"class_names={names!r} must be resolved into one name per class first "
            "(tf_pacseg.training.classes.resolve_classes)."
        )
    if names is not None and tuple(names) != class_names.default_class_names(config.num_classes):
        metadata["class_names"] = list(names)
    return metadata


def batch_confusion(labels, logits, num_classes, ignore_label):
    """The int32 confusion matrix of a batch's argmax predictions."""
    predictions = ops.argmax(logits, axis=-1)
    return metrics.confusion_matrix(labels, predictions, num_classes, ignore_label)
