"""Constants shared by the model, the data tools and the entry scripts."""

# Label value that marks pixels excluded from the loss and the metrics.
IGNORE_LABEL = 255

NUM_CLASSES = 21

# Mean RGB pixel of the training set; pads images where labels are padded with
# IGNORE_LABEL, so padding looks like an average pixel to the network.
MEAN_RGB = (123.15, 115.90, 103.06)

# The original shuffled a whole epoch of train_aug (10582 serialized examples,
# about 1 GB of encoded bytes); lower it when memory is tight.
DEFAULT_SHUFFLE_BUFFER = 10582

# (height, width) of the training crops and the minimum padded evaluation size.
CROP_SIZE = (513, 513)

# The discrete random-scale set of the training augmentation (0.5, 0.75, ..., 2.0).
MIN_SCALE = 0.5
MAX_SCALE = 2.0
SCALE_STEP = 0.25

BASE_ARCHITECTURES = ("resnet_v1_50", "resnet_v1_101", "resnet_v2_50", "resnet_v2_101")
HEADS = ("pac", "aspp")
OUTPUT_STRIDES = (8, 16)

# Evaluation and prediction defaults, here so that the scripts import them
# without importing TensorFlow.
DEFAULT_EVAL_BATCH_SIZE = 4
DEFAULT_EVAL_SCALES = (1.0,)
OUTPUT_FORMATS = ("color", "index", "overlay", "logits")
DEFAULT_OUTPUT_FORMAT = "color"
DEFAULT_OVERLAY_OPACITY = 0.5

# Large images (tf_pacseg.inference.tiling): "whole" runs the network on the
# whole image, "slide" on overlapping tiles, "auto" slides above
# DEFAULT_MAX_WHOLE_PIXELS.
INFERENCE_MODES = ("whole", "slide", "auto")
DEFAULT_INFERENCE_MODE = "auto"
# Tiles of the training crop, so that the network (its image pooling above
# all) sees the context it was trained on; by default they are placed every two
# thirds of a tile (342 px for 513), overlapping by a third (171 px), so every
# pixel near a tile's inner edge is also well inside another tile.
DEFAULT_TILE_SIZE = CROP_SIZE[0]
TILE_STRIDE_FRACTION = 2 / 3
DEFAULT_TILE_BATCH_SIZE = 4
# Whole-image inference of ResNet-50 + PAC takes ~0.45 GB per megapixel on
# top of ~0.9 GB (peak RSS on CPU: 2.6 GB for 3.8 MP, 11.4 GB for 24 MP), so
# 4 MP (~2.7 GB) fits a laptop and a 16 GB GPU; VOC's images (at most 500x500,
# padded to 513x513) always run whole.
DEFAULT_MAX_WHOLE_PIXELS = 4_000_000
# Images above this are refused (a decompression-bomb guard): Pillow's own
# error threshold, 2 * PIL.Image.MAX_IMAGE_PIXELS.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

# File name endings read as images, in any case, in order of preference.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# TFRecord feature keys, as written by the original converter.
IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
LABEL_ENCODED = "label/encoded"
LABEL_FORMAT = "label/format"

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _voc_palette(num_colors=256):
    """The PASCAL VOC colour map: bits of the class id spread over R, G, B."""
    palette = []
    for index in range(num_colors):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return tuple(palette)


# 256 entries so that any uint8 label (255 included) has a colour; 255 is
# (224, 224, 192), the VOC "void" colour.
VOC_PALETTE = _voc_palette()
