r"""Converts PASCAL VOC 2012 (with the augmented labels) to sharded TFRecords.

Writes `train-0000i-of-0000n.tfrecord` and `val-...` shards into --output_path,
the --data_dir of training and evaluation. Samples that cannot be converted
are skipped with a warning and listed at the end (or, with --strict, stop the
run).

Your own dataset: labels drawn as colour masks are read with
--label_colors=FILE (one `r,g,b` line per class, class 0 first, and
`ignore: r,g,b` for colours to leave out), and --class_names=FILE (one name
per line) is written beside the shards as class_names.txt.

Usage:

  python data/convert_voc.py --data_dir=VOCdevkit/VOC2012 \
      --train_data_list=ImageSets/Segmentation/train_aug.txt \
      --valid_data_list=ImageSets/Segmentation/val.txt --output_path=dataset

  python data/convert_voc.py --data_dir=my_data --label_data_dir=masks \
      --num_classes=5 --label_colors=my_data/colors.txt \
      --class_names=my_data/names.txt --output_path=my_dataset
"""

import sys

from absl import flags

from tf_pacseg import cli
from tf_pacseg.cli.data_flags import define_label_value_flags
from tf_pacseg.data import conversion

flags.DEFINE_string(
    "data_dir", None, "The PASCAL VOC folder, e.g. VOCdevkit/VOC2012 (holds JPEGImages/)."
)
flags.DEFINE_string(
    "output_path", "./dataset", "Folder for the TFRecord shards (created if needed)."
)
flags.DEFINE_string(
    "train_data_list",
    "ImageSets/Segmentation/train.txt",
    "File of training image ids, one per line; relative to --data_dir (else to the working "
    "directory). For the 10,582-image augmented set pass its train_aug list. Empty: skip.",
)
flags.DEFINE_string(
    "valid_data_list",
    "ImageSets/Segmentation/val.txt",
    "File of validation image ids (1,449 in VOC 2012), as --train_data_list. Empty: skip.",
)
flags.DEFINE_string(
    "image_data_dir", "JPEGImages", "Folder of <id>.jpg images, relative to --data_dir."
)
flags.DEFINE_string(
    "label_data_dir",
    "SegmentationClassAug",
    "Folder of <id>.png labels, relative to --data_dir: one-channel class indices "
    "(SegmentationClassAug) or VOC palette PNGs (SegmentationClass).",
)
flags.DEFINE_integer(
    "num_shards", conversion.NUM_SHARDS, "TFRecord shards per split.", lower_bound=1
)
define_label_value_flags()
flags.DEFINE_boolean(
    "strict", False, "Stop at the first bad sample instead of skipping it with a warning."
)
flags.DEFINE_string(
    "label_colors",
    None,
    "Read the labels as RGB colour masks: 'voc' for the VOC palette, or a file with one "
    "'r,g,b' line per class in class order (the first is class 0), plus any number of "
    "'ignore: r,g,b' lines for colours stored as --ignore_label; commas or spaces separate "
    "the numbers, '#' starts a comment. A pixel of another colour, or a JPEG-compressed "
    "mask, skips the sample. Default: labels hold class indices (or VOC palette colours).",
)
flags.DEFINE_string(
    "class_names",
    None,
    "'voc', or a file with one class name per line in class order (--num_classes of "
    "them), written beside the shards as class_names.txt for the later steps. Default: "
    "none written.",
)
flags.DEFINE_integer(
    "num_workers",
    None,
    "Decoding processes; 0 or 1 decode in the main process. Default: one per CPU for "
    "large lists, none for small ones.",
    lower_bound=0,
)

flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main():
    try:
        summary = conversion.convert_voc(
            FLAGS.data_dir,
            FLAGS.output_path,
            FLAGS.train_data_list,
            FLAGS.valid_data_list,
            image_data_dir=FLAGS.image_data_dir,
            label_data_dir=FLAGS.label_data_dir,
            num_shards=FLAGS.num_shards,
            num_classes=FLAGS.num_classes,
            ignore_label=FLAGS.ignore_label,
            strict=FLAGS.strict,
            num_workers=FLAGS.num_workers,
            label_colors=FLAGS.label_colors,
            class_names=FLAGS.class_names,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"convert_voc.py: error: {error}")
    print(summary)
    empty = [split for split, count in summary.written.items() if count == 0]
    if empty:
        sys.exit(f"convert_voc.py: error: no valid sample in the {' and '.join(empty)} list.")


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main)


if __name__ == "__main__":
    run()
