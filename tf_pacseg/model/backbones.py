"""Atrous ResNet backbones: DeepLab's ResNet v1 "beta" and pre-activation ResNet v2.

Reference: "Rethinking Atrous Convolution for Semantic Image Segmentation"
(https://arxiv.org/abs/1706.05587). Layer names follow the TF1-slim scopes of
the original checkpoints (see `tf_pacseg.model.layers`).
"""

import keras

from tf_pacseg import checks, constants
from tf_pacseg.model.blocks import ConvBlocks

# Bottleneck units in block1..block4.
UNITS_PER_BLOCK = {
    "resnet_v1_50": (3, 4, 6, 3),
    "resnet_v1_101": (3, 4, 23, 3),
    "resnet_v2_50": (3, 4, 6, 3),
    "resnet_v2_101": (3, 4, 23, 3),
}
BACKBONE_BATCH_NORM_DECAY = 0.95
BLOCK_BASE_DEPTHS = (64, 128, 256, 512)


def unit_strides_and_rates(units_per_block, output_stride, multi_grid):
    """(stride, dilation rate) of every unit's 3x3 conv, block by block.

    Walks the units in order with the cumulative stride (4 after the root):
    once it reaches `output_stride`, units lose their stride and dilate by the
    stride they would have applied instead. The last unit of blocks 1-3 is
    the one with stride 2; block4 multiplies its rate by the multi-grid.
    """
    current_stride, rate = 4, 1
    plan = []
    for block_index, num_units in enumerate(units_per_block):
        block = []
        for unit_index in range(num_units):
            nominal_stride = 2 if block_index < 3 and unit_index == num_units - 1 else 1
            grid = multi_grid[unit_index] if block_index == 3 else 1
            if current_stride == output_stride:
                block.append((1, rate * grid))
                rate *= nominal_stride
            else:
                block.append((nominal_stride, grid))
                current_stride *= nominal_stride
        plan.append(block)
    if current_stride != output_stride:
        raise checks.invalid("output_stride", "a stride that these blocks reach", output_stride)
    return plan


@keras.saving.register_keras_serializable(package="tf_pacseg")
class ResNetBackbone(keras.Model):
    """Atrous ResNet feature extractor (2048 channels at `output_stride`).

    `resnet_v1_*` is DeepLab's "beta" ResNet v1 (three 3x3 root convolutions);
    `resnet_v2_*` is the pre-activation ResNet v2. Input: images already
    scaled to [-1, 1].

    Args:
        base_architecture: str. One of `"resnet_v1_50"`, `"resnet_v1_101"`,
            `"resnet_v2_50"`, `"resnet_v2_101"`.
        output_stride: int. 8 or 16. Defaults to 16.
        multi_grid: tuple of ints. Rate multipliers of block4's units.
            Defaults to `(1, 2, 4)`.
        units_per_block: optional tuple of 4 ints. Fewer units per block than
            the architecture has, for fast tests and demos only; such a
            network cannot load the original checkpoints. Defaults to the
            architecture's own.
        weight_decay: float. L2 factor of the conv kernels, as TF1-slim
            applies it (`weight_decay * sum(w**2) / 2`). Defaults to `1e-4`.
        batch_norm_decay: float. Moving-average decay of the backbone's
            BatchNorm. Defaults to 0.95, the original's.
        fine_tune_batch_norm: bool. Whether training updates BatchNorm
            statistics (else BatchNorm always uses the moving ones).
            Defaults to `True`.
        sync_batch_norm: bool. Synchronise batch statistics across replicas.
            Defaults to `False`.
        fold_batch_norm: bool. Every conv -> BatchNorm pair is one conv with
            a bias, for the inference network that
            `tf_pacseg.model.folding.fold_batch_norms` fills; v2's `preact`
            and `postnorm` BatchNorms, which follow no conv, stay. Defaults
            to `False`.
        winograd: bool. With `fold_batch_norm`, the 3x3 convolutions of
            blocks 3 and 4 (rate 1 or 2) are `WinogradConv2D`s
            (`ConvBlocks`). Defaults to `False`.
    """

    def __init__(
        self,
        base_architecture="resnet_v1_101",
        output_stride=16,
        multi_grid=(1, 2, 4),
        units_per_block=None,
        weight_decay=1e-4,
        batch_norm_decay=BACKBONE_BATCH_NORM_DECAY,
        fine_tune_batch_norm=True,
        sync_batch_norm=False,
        fold_batch_norm=False,
        winograd=False,
        **kwargs,
    ):
        checks.one_of("base_architecture", base_architecture, constants.BASE_ARCHITECTURES)
        checks.one_of("output_stride", output_stride, constants.OUTPUT_STRIDES)
        units_per_block = checks.units_per_block(units_per_block)
        units = units_per_block or UNITS_PER_BLOCK[base_architecture]
        multi_grid = checks.positive_ints("multi_grid", multi_grid)
        if len(multi_grid) < units[3]:
            raise checks.invalid(
                "multi_grid", f"at least one rate per block4 unit ({units[3]})", multi_grid
            )

        version = base_architecture.split("_")[1]
        conv = ConvBlocks(
            weight_decay,
            batch_norm_decay,
            fine_tune_batch_norm,
            sync_batch_norm,
            "he_normal",
            fold_batch_norm,
            winograd,
        )
        plan = unit_strides_and_rates(units, output_stride, multi_grid)
        scope = base_architecture

        inputs = keras.Input((None, None, 3))
        if version == "v1":
            x = conv(inputs, 64, 3, f"{scope}.conv1_1", stride=2)
            x = conv(x, 64, 3, f"{scope}.conv1_2")
            x = conv(x, 128, 3, f"{scope}.conv1_3")
        else:
            x = conv(inputs, 64, 7, f"{scope}.conv1", stride=2, batch_norm=False, activation=None)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{scope}.pool1")(x)

        unit_fn = _bottleneck_v1 if version == "v1" else _bottleneck_v2
        for block_index, block in enumerate(plan):
            depth = BLOCK_BASE_DEPTHS[block_index]
            for unit_index, (stride, rate) in enumerate(block):
                name = f"{scope}.block{block_index + 1}.unit_{unit_index + 1}.bottleneck_{version}"
                x = unit_fn(conv, x, depth, stride, rate, name)
        if version == "v2":
            # Pre-activation units leave their sum un-normalised.
            x = conv.batch_norm(x, f"{scope}.postnorm")
            x = keras.layers.ReLU(name=f"{scope}.postnorm.relu")(x)

        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.base_architecture = base_architecture
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.units_per_block = units_per_block
        self.weight_decay = weight_decay
        self.batch_norm_decay = batch_norm_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self.fold_batch_norm = fold_batch_norm
        self.winograd = winograd

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "base_architecture": self.base_architecture,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "units_per_block": self.units_per_block,
            "weight_decay": self.weight_decay,
            "batch_norm_decay": self.batch_norm_decay,
            "fine_tune_batch_norm": self.fine_tune_batch_norm,
            "sync_batch_norm": self.sync_batch_norm,
            "fold_batch_norm": self.fold_batch_norm,
            "winograd": self.winograd,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _subsample(x, stride, name):
    if stride == 1:
        return x
    return keras.layers.MaxPooling2D(1, strides=stride, padding="same", name=name)(x)


def _bottleneck_v1(conv, x, depth, stride, rate, name):
    """conv1 1x1 -> conv2 3x3 (stride, rate) -> conv3 1x1, plus the shortcut; ReLU."""
    if x.shape[-1] == depth * 4:
        shortcut = _subsample(x, stride, f"{name}.shortcut")
    else:
        shortcut = conv(x, depth * 4, 1, f"{name}.shortcut", stride=stride, activation=None)
    residual = conv(x, depth, 1, f"{name}.conv1")
    residual = conv(residual, depth, 3, f"{name}.conv2", stride=stride, rate=rate)
    residual = conv(residual, depth * 4, 1, f"{name}.conv3", activation=None)
    x = keras.layers.Add(name=f"{name}.add")([shortcut, residual])
    return keras.layers.ReLU(name=f"{name}.relu")(x)


def _bottleneck_v2(conv, x, depth, stride, rate, name):
    """Pre-activation unit: BN-ReLU first; the shortcut conv and conv3 have biases."""
    preact = conv.batch_norm(x, f"{name}.preact")
    preact = keras.layers.ReLU(name=f"{name}.preact.relu")(preact)
    if x.shape[-1] == depth * 4:
        shortcut = _subsample(x, stride, f"{name}.shortcut")
    else:
        shortcut = conv(
            preact,
            depth * 4,
            1,
            f"{name}.shortcut",
            stride=stride,
            batch_norm=False,
            activation=None,
            use_bias=True,
        )
    residual = conv(preact, depth, 1, f"{name}.conv1")
    residual = conv(residual, depth, 3, f"{name}.conv2", stride=stride, rate=rate)
    residual = conv(
        residual, depth * 4, 1, f"{name}.conv3", batch_norm=False, activation=None, use_bias=True
    )
    return keras.layers.Add(name=f"{name}.add")([shortcut, residual])
