r"""Converts PASCAL VOC 2012 (with the augmented labels) to sharded TFRecords.

Writes `train-0000i-of-0000n.tfrecord` and `val-...` shards into --output_path,
the --data_dir of training and evaluation. Samples that cannot be converted
are skipped with a warning and listed at the end (or, with --strict, stop the
run).

Usage:

  python data/convert_voc.py --data_dir=VOCdevkit/VOC2012 \
      --train_data_list=ImageSets/Segmentation/train_aug.txt \
      --valid_data_list=ImageSets/Segmentation/val.txt --output_path=dataset
"""

import os
import sys

from absl import app, flags

# Run as a file (`python data/convert_voc.py`), the repository root is not on
# the import path; put it there so `tf_pacseg` imports without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_pacseg import constants, voc  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "The PASCAL VOC folder, e.g. VOCdevkit/VOC2012 (holds JPEGImages/)."
)
_OUTPUT_PATH = flags.DEFINE_string(
    "output_path", "./dataset", "Folder for the TFRecord shards (created if needed)."
)
_TRAIN_DATA_LIST = flags.DEFINE_string(
    "train_data_list",
    "ImageSets/Segmentation/train.txt",
    "File of training image ids, one per line; relative to --data_dir (else to the working "
    "directory). For the 10,582-image augmented set pass its train_aug list. Empty: skip.",
)
_VALID_DATA_LIST = flags.DEFINE_string(
    "valid_data_list",
    "ImageSets/Segmentation/val.txt",
    "File of validation image ids (1,449 in VOC 2012), as --train_data_list. Empty: skip.",
)
_IMAGE_DATA_DIR = flags.DEFINE_string(
    "image_data_dir", "JPEGImages", "Folder of <id>.jpg images, relative to --data_dir."
)
_LABEL_DATA_DIR = flags.DEFINE_string(
    "label_data_dir",
    "SegmentationClassAug",
    "Folder of <id>.png labels, relative to --data_dir: one-channel class indices "
    "(SegmentationClassAug) or VOC palette PNGs (SegmentationClass).",
)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes",
    constants.NUM_CLASSES,
    "Label values must be below this, or the ignore label 255.",
    lower_bound=1,
)
_STRICT = flags.DEFINE_boolean(
    "strict", False, "Stop at the first bad sample instead of skipping it with a warning."
)
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers",
    None,
    "Decoding processes; 0 or 1 decode in the main process. Default: one per CPU for "
    "large lists, none for small ones.",
    lower_bound=0,
)

flags.mark_flag_as_required("data_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        summary = voc.convert_voc(
            _DATA_DIR.value,
            _OUTPUT_PATH.value,
            _TRAIN_DATA_LIST.value,
            _VALID_DATA_LIST.value,
            image_data_dir=_IMAGE_DATA_DIR.value,
            label_data_dir=_LABEL_DATA_DIR.value,
            num_shards=_NUM_SHARDS.value,
            num_classes=_NUM_CLASSES.value,
            strict=_STRICT.value,
            num_workers=_NUM_WORKERS.value,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"convert_voc.py: error: {error}")
    print(summary)
    empty = [split for split, count in summary.written.items() if count == 0]
    if empty:
        sys.exit(f"convert_voc.py: error: no valid sample in the {' and '.join(empty)} list.")


if __name__ == "__main__":
    app.run(main)
