"""The segmentation network: atrous ResNet -> PAC or ASPP -> 1x1 classifier."""

import keras

from tf_pacseg import checks, constants
from tf_pacseg.model.backbones import BACKBONE_BATCH_NORM_DECAY, ResNetBackbone
from tf_pacseg.model.blocks import ConvBlocks
from tf_pacseg.model.convolutions import Conv2D
from tf_pacseg.model.heads import atrous_spatial_pyramid_pooling, pyramid_atrous_convolution
from tf_pacseg.model.layers import ResizeLike

DROPOUT_RATE = 0.1  # the original's keep probability of 0.9


@keras.saving.register_keras_serializable(package="tf_pacseg")
class PACSegmenter(keras.Model):
    """Semantic segmentation with Pyramid Atrous Convolution.

    "Semantic Image Segmentation with Pyramid Atrous Convolution and
    Boundary-aware Loss" (Dongkyu Yu, POSTECH), on DeepLabV3
    (https://arxiv.org/abs/1706.05587). Takes RGB images in [0, 255] (float or
    uint8, any size) and returns float32 logits at the input's size.

    Args:
        base_architecture: str. `"resnet_v1_50"`, `"resnet_v1_101"`,
            `"resnet_v2_50"` or `"resnet_v2_101"`. Defaults to `"resnet_v1_101"`.
        head: str. `"pac"` or `"aspp"`. Defaults to `"pac"`.
        output_stride: int. 8 or 16. Defaults to 16.
        num_classes: int. Defaults to 21.
        multi_grid: tuple of ints. Block4 rate multipliers. Defaults to `(1, 2, 4)`.
        batch_norm_decay: float. Moving-average decay of the head's BatchNorm
            (the backbone's is 0.95, as in the original). Defaults to 0.9997.
        weight_decay: float. L2 factor on conv kernels, TF1-slim style.
            Defaults to `1e-4`.
        fine_tune_batch_norm: bool. Whether training uses and updates batch
            statistics. Defaults to `True`.
        sync_batch_norm: bool. Batch statistics over all replicas. Defaults
            to `False`.
        units_per_block: optional tuple of 4 ints. A shallower backbone for
            fast tests and demos. Defaults to the architecture's own.
        fold_batch_norm: bool. The inference network with every conv ->
            BatchNorm pair as one biased conv, which
            `tf_pacseg.model.folding.fold_batch_norms` builds from a trained
            model; not for training. Defaults to `False`.
        winograd: bool. With `fold_batch_norm`, the backbone's 3x3
            convolutions of rate 1 or 2 over 256 or more channels are
            `tf_pacseg.model.winograd.WinogradConv2D`s (float32 inference).
            Defaults to `False`.

    Example:
    ```python
    model = tf_pacseg.build_model("resnet_v1_101", head="pac")
    logits = model(np.zeros((1, 513, 513, 3), "float32"))  # (1, 513, 513, 21)
    ```
    """

    def __init__(
        self,
        base_architecture="resnet_v1_101",
        head="pac",
        output_stride=16,
        num_classes=constants.NUM_CLASSES,
        multi_grid=(1, 2, 4),
        batch_norm_decay=0.9997,
        weight_decay=1e-4,
        fine_tune_batch_norm=True,
        sync_batch_norm=False,
        units_per_block=None,
        fold_batch_norm=False,
        winograd=False,
        **kwargs,
    ):
        checks.one_of("head", head, constants.HEADS)
        checks.positive_int("num_classes", num_classes)
        backbone = ResNetBackbone(
            base_architecture=base_architecture,
            output_stride=output_stride,
            multi_grid=multi_grid,
            units_per_block=units_per_block,
            weight_decay=weight_decay,
            batch_norm_decay=BACKBONE_BATCH_NORM_DECAY,
            fine_tune_batch_norm=fine_tune_batch_norm,
            sync_batch_norm=sync_batch_norm,
            fold_batch_norm=fold_batch_norm,
            winograd=winograd,
            name=base_architecture,
        )
        conv = ConvBlocks(
            weight_decay,
            batch_norm_decay,
            fine_tune_batch_norm,
            sync_batch_norm,
            "glorot_uniform",
            fold_batch_norm,
        )

        inputs = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(2.0 / 255.0, offset=-1.0, name="preprocess")(inputs)
        features = backbone(x)
        if head == "pac":
            x = pyramid_atrous_convolution(features, conv)
        else:
            x = atrous_spatial_pyramid_pooling(features, conv, output_stride)
        x = keras.layers.Dropout(DROPOUT_RATE, name="network.dropout")(x)
        x = Conv2D(
            num_classes,
            1,
            use_bias=False,
            kernel_initializer="glorot_uniform",
            kernel_regularizer=conv.regularizer,
            name="network.conv2d",
        )(x)
        logits = ResizeLike(dtype="float32", name="network.upsample")([x, inputs])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        self.backbone = backbone
        self.base_architecture = base_architecture
        self.head = head
        self.output_stride = output_stride
        self.num_classes = num_classes
        self.multi_grid = tuple(multi_grid)
        self.batch_norm_decay = batch_norm_decay
        self.weight_decay = weight_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self.units_per_block = backbone.units_per_block
        self.fold_batch_norm = fold_batch_norm
        self.winograd = winograd

    def architecture(self):
        """The arguments that fix the variables' shapes and meaning (JSON-able)."""
        return {
            "base_architecture": self.base_architecture,
            "head": self.head,
            "output_stride": self.output_stride,
            "num_classes": self.num_classes,
            "multi_grid": list(self.multi_grid),
            "units_per_block": list(self.units_per_block) if self.units_per_block else None,
        }

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            **self.architecture(),
            "batch_norm_decay": self.batch_norm_decay,
            "weight_decay": self.weight_decay,
            "fine_tune_batch_norm": self.fine_tune_batch_norm,
            "sync_batch_norm": self.sync_batch_norm,
            "fold_batch_norm": self.fold_batch_norm,
            "winograd": self.winograd,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(base_architecture="resnet_v1_101", head="pac", **kwargs):
    """Builds a `PACSegmenter`: `base_architecture`, `head`, then its keyword arguments.

    Defaults: output_stride=16, num_classes=21, multi_grid=(1, 2, 4),
    batch_norm_decay=0.9997, weight_decay=1e-4 (see `PACSegmenter`).
    """
    return PACSegmenter(base_architecture=base_architecture, head=head, **kwargs)
