"""The settings of a training run and what it returns (no TensorFlow, no Keras).

`TrainConfig` is the single source of every training setting: train.py
generates its flags from its fields, defaults and docstring (`training.flags`).
"""

import dataclasses

from tf_pacseg import checks, constants

LOSSES = ("bal", "ce")
MIXED_PRECISION_POLICIES = ("none", "mixed_float16", "mixed_bfloat16")
KEEP_BEST = ("none", "miou")
EXPORT_FROM = ("last", "best")
# `--class_weights=auto`: median-frequency balancing from the training records.
AUTO_CLASS_WEIGHTS = "auto"
DEFAULT_PRE_TRAINED_MODEL = "./init_checkpoints/<arch>/model.ckpt"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); nothing was saved after it."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run; the first 27 are the original's, with its defaults.

    train.py's flags are these fields (`training.flags`): same names and
    defaults, help text from the entries below without their type and default.

    Args:
        num_gpu: int. GPUs to train on, per machine (0: the CPU); the global
            batch is split evenly over all replicas (GPUs x workers). The JAX
            engine uses every local device instead. Defaults to 1.
        base_architecture: str. Backbone: DeepLab's ResNet v1 "beta" or the
            pre-activation ResNet v2. Defaults to `"resnet_v1_101"`.
        pre_trained_model: str or None. Backbone initialisation: a TF1 ImageNet
            checkpoint prefix (e.g. DeepLab's resnet_v1_101_beta), or a
            *.weights.h5 (with its .json) / directory holding model.weights.h5
            whose backbone is loaded. <arch> is replaced by base_architecture.
            Empty (--pre_trained_model=) trains from scratch. Ignored when
            model_dir holds a checkpoint to resume from; its default is
            dropped when init_checkpoint is given. Defaults to
            `"./init_checkpoints/<arch>/model.ckpt"`.
        model_dir: str. Run directory: checkpoints, TensorBoard summaries
            (train/, eval/), model.weights.h5 + model.json and the export
            (export/). Defaults to `"./model"`.
        data_dir: str. Folder of the TFRecords: train-*/val-*-of-*.tfrecord
            (data/convert_voc.py) or the original's voc_train.record /
            voc_val.record. Defaults to `"./dataset/"`.
        clean_model_dir: bool. Delete model_dir first, starting over instead of
            resuming. Defaults to `False`.
        train_epochs: int. Epochs to train (unless max_iter comes first).
            Defaults to 46.
        epochs_per_eval: int. Evaluate on the val records every this many
            epochs (0: never). Defaults to 1.
        batch_size: int. Global batch size, split over all replicas. Defaults to 16.
        max_iter: int. Steps of the "poly" learning-rate schedule; training
            also stops after this many steps from initial_global_step.
            Defaults to 30000.
        initial_global_step: int. Global step a fresh run starts at, when
            fine-tuning a trained model: the schedule and max_iter count from
            it. Defaults to 0.
        output_stride: int. Input size / feature map size. Defaults to 16.
        initial_learning_rate: float. Learning rate at the first step. Defaults to 0.007.
        end_learning_rate: float. Learning rate reached after max_iter steps.
            Defaults to 0.
        power: float. Power of the "poly" learning-rate schedule. Defaults to 0.9.
        momentum: float. Momentum of the (TF1-style) momentum optimizer.
            Defaults to 0.9.
        weight_decay: float. L2 regularisation: weight_decay * sum(w^2) / 2 per
            conv kernel (1e-4 for ResNet). Defaults to 0.0001.
        fine_tune_batch_norm: bool. True: BatchNorm normalises with batch
            statistics and updates its moving statistics, its beta/gamma stay
            fixed. False: moving statistics are used and beta/gamma train. Use
            False when the per-replica batch is small. Defaults to `True`.
        batch_norm_decay: float. Moving-average decay of the head's BatchNorm
            (backbone: 0.95). Defaults to 0.9997.
        debug: bool. Stop at the first op that produces a NaN/inf, naming it
            (TensorFlow: enable_check_numerics; JAX: jax_debug_nans). Slow. Not
            with `mixed_float16`, whose loss scaling overflows on purpose.
            Defaults to `False`.
        num_classes: int. Number of classes to predict. Defaults to 21.
        input_height: int. Training crop height. Defaults to 513.
        input_width: int. Training crop width. Defaults to 513.
        input_depth: int. Image channels; only 3 (RGB) is supported. Defaults to 3.
        min_scale: float. Smallest random scale of the training augmentation.
            Defaults to 0.5.
        max_scale: float. Largest random scale of the training augmentation.
            Defaults to 2.0.
        ignore_label: int. Label value of pixels left out of the loss and the
            metrics. Defaults to 255.
        head: str. pac: Pyramid Atrous Conv; aspp: DeepLabV3. Defaults to `"pac"`.
        loss: str. bal: boundary-aware loss; ce: cross entropy. Defaults to `"bal"`.
        sync_batch_norm: bool. Batch statistics over all replicas instead of
            per replica (TensorFlow engine; the JAX engine's are always over
            the global batch). Defaults to `False`.
        mixed_precision: str. Compute in float16 (with dynamic loss scaling)
            or bfloat16; variables stay float32. Defaults to `"none"`.
        jit_compile: bool. Compile each replica's forward and backward pass
            with XLA (the JAX engine always compiles its whole step).
            Defaults to `False`.
        log_every_n_steps: int. Progress line and TensorBoard scalars every
            this many steps. Defaults to 10.
        save_checkpoints_steps: int. Checkpoint (and model.weights.h5) every
            this many steps; also before each evaluation, on SIGINT/SIGTERM and
            at the end. Defaults to 1000.
        keep_checkpoint_max: int. Checkpoints kept in model_dir. Defaults to 5.
        seed: int or None. Random seed of initialisation, dropout and input
            order (None: random). Defaults to `None`.
        units_per_block: tuple of 4 ints or None. Bottleneck units in
            block1..block4, e.g. 1,1,1,1: a shallower backbone for tests and
            demos (None: the architecture's). Defaults to `None`.
        shuffle_buffer: int. Examples in the training input's shuffle buffer
            (10582: an epoch of VOC train_aug). Defaults to 10582.
        init_checkpoint: str or None. Fine-tuning: initialise the whole
            network, backbone and head, from a trained model: the original's
            TF1 checkpoint (e.g. the released model) or a *.weights.h5 (with
            its .json) / directory holding model.weights.h5. The classifier
            (network/conv2d) is left out when num_classes differs. Not with
            pre_trained_model; ignored when model_dir holds a checkpoint to
            resume from. Defaults to `None`.
        skip_bad_records: bool. Leave out the training and evaluation records
            that cannot be read (a damaged file, an image or label that does
            not decode, a label of another size, a missing feature), each
            logged, their count in the progress line, TensorBoard and the
            final line; a damaged file is read up to the damaged record. Every
            record is read once at start-up to find them. Without it, such a
            record stops the run with one line naming it. Defaults to `False`.
        class_names: str or None. The classes' names: a file of one name per
            line, or voc. They go into model.json, the evaluation tables and
            TensorBoard's iou/<name>. None: the class_names.txt beside the
            training records if there is one, else VOC's names for 21
            classes, else class_0, class_1, ... (in code, also a tuple of
            names). Defaults to `None`.
        class_weights: str or None. Per-class loss weights w0,w1,...,wC-1
            (one per class, >= 0), multiplying each pixel's loss; the loss
            still divides by the pixels whose weight is not 0. auto:
            median-frequency balancing from the training records' pixel
            counts, computed (and logged) at start-up, on resuming too. None:
            every class 1, the original's loss (in code, also a tuple of
            numbers). Defaults to `None`.
        top_k_percent_pixels: float. In (0, 1]: train on the hardest pixels
            only, the share with the largest (weighted) losses in each
            replica's batch (JAX engine: the global batch), averaged (TF
            DeepLab's top_k_percent_pixels). 1: every pixel, the original's
            loss. Defaults to 1.0.
        keep_best: str. miou: after each evaluation that improves the
            validation mIoU, write model_dir/best/ (model.weights.h5,
            model.json, evaluation.json), replaced atomically; the best value
            is read back from it on resuming. none: no best model.
            Defaults to `"none"`.
        export_from: str. The model written to model_dir/export at the end:
            last (the final step's) or best (model_dir/best/, with
            keep_best=miou). Defaults to `"last"`.
    """

    # The original's options, in its order.
    num_gpu: int = 1
    base_architecture: str = "resnet_v1_101"
    pre_trained_model: str | None = DEFAULT_PRE_TRAINED_MODEL
    model_dir: str = "./model"
    data_dir: str = "./dataset/"
    clean_model_dir: bool = False
    train_epochs: int = 46
    epochs_per_eval: int = 1
    batch_size: int = 16
    max_iter: int = 30000
    initial_global_step: int = 0
    output_stride: int = 16
    initial_learning_rate: float = 0.007
    end_learning_rate: float = 0.0
    power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 1e-4
    fine_tune_batch_norm: bool = True
    batch_norm_decay: float = 0.9997
    debug: bool = False
    num_classes: int = constants.NUM_CLASSES
    input_height: int = constants.CROP_SIZE[0]
    input_width: int = constants.CROP_SIZE[1]
    input_depth: int = 3
    min_scale: float = constants.MIN_SCALE
    max_scale: float = constants.MAX_SCALE
    ignore_label: int = constants.IGNORE_LABEL
    # Added options.
    head: str = "pac"
    loss: str = "bal"
    sync_batch_norm: bool = False
    mixed_precision: str = "none"
    jit_compile: bool = False
    log_every_n_steps: int = 10
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    seed: int | None = None
    units_per_block: tuple | None = None
    shuffle_buffer: int = constants.DEFAULT_SHUFFLE_BUFFER
    init_checkpoint: str | None = None
    skip_bad_records: bool = False
    class_names: str | None = None
    class_weights: str | None = None
    top_k_percent_pixels: float = 1.0
    keep_best: str = "none"
    export_from: str = "last"

    def __post_init__(self):
        for name in CHOICES:
            check_choice(name, getattr(self, name))
        positive = (
            "batch_size",
            "train_epochs",
            "max_iter",
            "num_classes",
            "input_height",
            "input_width",
            "log_every_n_steps",
            "save_checkpoints_steps",
            "keep_checkpoint_max",
            "shuffle_buffer",
        )
        for name in positive:
            checks.positive_int(name, getattr(self, name))
        for name in ("num_gpu", "epochs_per_eval", "initial_global_step"):
            checks.non_negative_int(name, getattr(self, name))
        checks.one_of("input_depth", self.input_depth, (3,))
        if self.init_checkpoint:
            if self.pre_trained_model == DEFAULT_PRE_TRAINED_MODEL:
                self.pre_trained_model = None
            elif self.pre_trained_model:
                raise checks.invalid(
                    "init_checkpoint",
                    "no --pre_trained_model with it: --init_checkpoint initialises the whole "
                    "network, --pre_trained_model the backbone only",
                    received=f"init_checkpoint={self.init_checkpoint!r}, "
                    f"pre_trained_model={self.pre_trained_model!r}",
                )
        if self.debug and self.mixed_precision == "mixed_float16":
            # Loss scaling overflows on purpose (then lowers the scale); --debug stops there.
            raise checks.invalid(
                "debug",
                "False with float16 loss scaling, whose deliberate overflows it would report "
                "as the error: use --mixed_precision=none or mixed_bfloat16 with --debug",
                received=f"debug={self.debug}, mixed_precision={self.mixed_precision!r}",
            )
        self.units_per_block = checks.units_per_block(self.units_per_block)
        self.class_names = _class_names(self.class_names, self.num_classes)
        self.class_weights = _class_weights(self.class_weights, self.num_classes)
        checks.number_in_range(
            "top_k_percent_pixels", self.top_k_percent_pixels, 0, 1, include_low=False
        )
        if self.export_from == "best" and not (self.keep_best == "miou" and self.epochs_per_eval):
            raise checks.invalid(
                "export_from",
                "'last' unless keep_best='miou' with evaluations (epochs_per_eval > 0) write "
                "model_dir/best/",
                received=f"export_from={self.export_from!r}, keep_best={self.keep_best!r}, "
                f"epochs_per_eval={self.epochs_per_eval}",
            )


def _class_names(value, num_classes):
    """A names spec (a file, "voc") as is; a sequence of names as a checked tuple."""
    if value is None or isinstance(value, str):
        return value  # Read at start-up (`classes.resolve_classes`).
    names = tuple(value)
    if len(names) != num_classes:
        raise checks.invalid(
            "class_names",
            f"one name per class: {num_classes} names (num_classes={num_classes})",
            received=f"{len(names)} names",
        )
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise checks.invalid("class_names", "distinct non-empty names", names)
    return names


def _class_weights(value, num_classes):
    """None and "auto" as they are; "w0,w1,..." or a sequence as a checked tuple of floats."""
    if value is None or value == AUTO_CLASS_WEIGHTS:
        return value
    if isinstance(value, str):
        try:
            value = [float(w) for w in value.split(",")]
        except ValueError:
            raise checks.invalid(
                "class_weights", f"{AUTO_CLASS_WEIGHTS!r} or numbers separated by commas", value
            ) from None
    # Keras only when weights are given: importing the config imports neither it nor TF.
    from tf_pacseg.model.loss_options import check_class_weights

    return check_class_weights(value, num_classes)


# The fields that take one of a few values.
CHOICES = {
    "base_architecture": constants.BASE_ARCHITECTURES,
    "head": constants.HEADS,
    "output_stride": constants.OUTPUT_STRIDES,
    "loss": LOSSES,
    "mixed_precision": MIXED_PRECISION_POLICIES,
    "keep_best": KEEP_BEST,
    "export_from": EXPORT_FROM,
}
# The original `_init_.py`'s options: TrainConfig's first fields.
NUM_ORIGINAL_OPTIONS = 27


def check_choice(name, value):
    """Returns `value` if it is one of `CHOICES[name]`; raises otherwise.

    The one check of these settings, for `TrainConfig` and the training steps
    (e.g. `check_choice("loss", loss)`).
    """
    return checks.one_of(name, value, CHOICES[name])


@dataclasses.dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        step: int. The global step reached.
        interrupted: int or None. The signal that stopped training early
            (after saving), else `None`.
        evaluation: dict or None. The last evaluation result
            (`report.result_from_confusion_matrix`), if any.
    """

    step: int
    interrupted: int | None = None
    evaluation: dict | None = None
