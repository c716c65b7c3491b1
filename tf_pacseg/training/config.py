"""The settings of a training run and what it returns (no TensorFlow, no Keras).

`TrainConfig` is the single source of every training setting: train.py
generates its flags from the fields, their defaults and the `Args:` below
(`training.flags`).
"""

import dataclasses

from tf_pacseg import constants

LOSSES = ("bal", "ce")
MIXED_PRECISION_POLICIES = ("none", "mixed_float16", "mixed_bfloat16")
# An epoch of the original's train_aug list.
DEFAULT_SHUFFLE_BUFFER = 10582


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); nothing was saved after it."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the original's flags.

    Args:
        num_gpu: int. GPUs per machine (0: CPU) when `train` creates the
            strategy. Defaults to 1.
        model_dir: str. Checkpoints, summaries, weights and export. Defaults
            to `"./model"`.
        data_dir: str. Folder of the train/val TFRecords. Defaults to `"./dataset/"`.
        pre_trained_model: str or None. Backbone initialisation: a TF1
            ImageNet checkpoint prefix (e.g. `resnet_v1_101_beta`), or a
            `.weights.h5` with its `.json` (or a directory holding
            `model.weights.h5`); only the backbone is loaded, as the original
            did. `None` or `""` trains from scratch. Ignored when resuming.
            Defaults to `None`.
        clean_model_dir: bool. Delete `model_dir` first. Defaults to `False`.
        base_architecture: str. Defaults to `"resnet_v1_101"`.
        head: str. `"pac"` or `"aspp"`. Defaults to `"pac"`.
        output_stride: int. 8 or 16. Defaults to 16.
        num_classes: int. Defaults to 21.
        batch_norm_decay: float. The head's BatchNorm decay. Defaults to 0.9997.
        weight_decay: float. Defaults to 1e-4.
        fine_tune_batch_norm: bool. See the module docstring. Defaults to `True`.
        sync_batch_norm: bool. Batch statistics over all replicas. Defaults to `False`.
        units_per_block: tuple of 4 ints or None. A shallower backbone (tests,
            demos). Defaults to `None` (the architecture's).
        loss: str. `"bal"` (boundary-aware) or `"ce"`. Defaults to `"bal"`.
        batch_size: int. Global batch, split over all replicas. Defaults to 16.
        train_epochs: int. Defaults to 46.
        epochs_per_eval: int. Evaluate every this many epochs; 0 never.
            Defaults to 1.
        max_iter: int. Steps of the poly schedule, and at most of training.
            Defaults to 30000.
        initial_global_step: int. Step a fresh run starts at (fine-tuning);
            the schedule and `max_iter` count from it. Defaults to 0.
        initial_learning_rate: float. Defaults to 0.007.
        end_learning_rate: float. Defaults to 0.
        power: float. Defaults to 0.9.
        momentum: float. Defaults to 0.9.
        input_height: int. Training crop height. Defaults to 513.
        input_width: int. Training crop width. Defaults to 513.
        min_scale: float. Defaults to 0.5.
        max_scale: float. Defaults to 2.0.
        ignore_label: int. Defaults to 255.
        mixed_precision: str. `"none"`, `"mixed_float16"` (with loss
            scaling) or `"mixed_bfloat16"`. Defaults to `"none"`.
        jit_compile: bool. XLA-compile each replica's forward/backward pass.
            Defaults to `False`.
        debug: bool. `tf.debugging.enable_check_numerics`. Defaults to `False`.
        log_every_n_steps: int. Console line and scalar summaries. Defaults to 10.
        save_checkpoints_steps: int. Defaults to 1000.
        keep_checkpoint_max: int. Defaults to 5.
        seed: int or None. Initialisation, dropout and input order. Defaults to `None`.
        shuffle_buffer: int. Examples in the input shuffle buffer. Defaults to
            10582 (an epoch of train_aug).
    """

    num_gpu: int = 1
    model_dir: str = "./model"
    data_dir: str = "./dataset/"
    pre_trained_model: str | None = None
    clean_model_dir: bool = False
    base_architecture: str = "resnet_v1_101"
    head: str = "pac"
    output_stride: int = 16
    num_classes: int = constants.NUM_CLASSES
    batch_norm_decay: float = 0.9997
    weight_decay: float = 1e-4
    fine_tune_batch_norm: bool = True
    sync_batch_norm: bool = False
    units_per_block: tuple | None = None
    loss: str = "bal"
    batch_size: int = 16
    train_epochs: int = 46
    epochs_per_eval: int = 1
    max_iter: int = 30000
    initial_global_step: int = 0
    initial_learning_rate: float = 0.007
    end_learning_rate: float = 0.0
    power: float = 0.9
    momentum: float = 0.9
    input_height: int = 513
    input_width: int = 513
    min_scale: float = constants.MIN_SCALE
    max_scale: float = constants.MAX_SCALE
    ignore_label: int = constants.IGNORE_LABEL
    mixed_precision: str = "none"
    jit_compile: bool = False
    debug: bool = False
    log_every_n_steps: int = 10
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    seed: int | None = None
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER

    def __post_init__(self):
        choices = {
            "base_architecture": constants.BASE_ARCHITECTURES,
            "head": constants.HEADS,
            "output_stride": constants.OUTPUT_STRIDES,
            "loss": LOSSES,
            "mixed_precision": MIXED_PRECISION_POLICIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected one of {allowed}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )
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
            if getattr(self, name) < 1:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a strictly positive value. "
                    f"Received: {name}={getattr(self, name)}"
                )
        for name in ("num_gpu", "epochs_per_eval", "initial_global_step"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a non-negative value. "
                    f"Received: {name}={getattr(self, name)}"
                )
        if self.units_per_block is not None:
            self.units_per_block = tuple(int(n) for n in self.units_per_block)
            if len(self.units_per_block) != 4 or min(self.units_per_block) < 1:
                raise ValueError(
                    "Invalid value for `units_per_block`. Expected 4 strictly positive "
                    f"ints. Received: units_per_block={self.units_per_block}"
                )


@dataclasses.dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        step: int. The global step reached.
        interrupted: int or None. The signal that stopped training early
            (after saving), else `None`.
        evaluation: dict or None. The last evaluation result
            (`evaluation.result_from_confusion_matrix`), if any.
    """

    step: int
    interrupted: int | None = None
    evaluation: dict | None = None
