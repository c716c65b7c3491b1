r"""Prints what a converted dataset holds: images, sizes and pixels per class, per split.

    python data/dataset_stats.py --data_dir=dataset

Reads the train and val records of --data_dir (our shards, or the original's
voc_train.record / voc_val.record), a line per file read, then prints a
table: images per split, their height and width range, labelled, ignored and
out-of-range pixels; per class its pixels, share of the labelled pixels,
images holding it and median-frequency weight (Eigen & Fergus: the median
over classes of freq / freq_c, freq_c being the class's pixels over the
labelled pixels of the images that hold it; 0 for a class with none); and
the classes absent from each split. Writes the same as JSON to
--output_json.
"""

import json
import os
import sys

from absl import flags

from tf_pacseg import cli, constants

flags.DEFINE_string(
    "data_dir", None, "Folder of the records: the --data_dir of training and evaluation."
)
flags.DEFINE_string(
    "class_names",
    None,
    "'voc', or a file with one class name per line. Default: the class_names.txt that "
    "data/convert_voc.py wrote beside the records; without one, VOC's names for 21 "
    "classes, else class_0, class_1, ...",
)
flags.DEFINE_integer(
    "num_classes",
    None,
    "Number of classes. Default: the number of class names (21 without a names file).",
    lower_bound=1,
    upper_bound=256,
)
flags.DEFINE_integer(
    "ignore_label",
    constants.IGNORE_LABEL,
    "Label value of void pixels, counted apart from the classes.",
    lower_bound=0,
    upper_bound=255,
)
flags.DEFINE_string(
    "output_json", None, "Where to write the statistics. Default: <data_dir>/dataset_stats.json."
)
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def _show_progress(path, num_images, done, num_files):
    images = "image" if num_images == 1 else "images"
    print(f"[{done}/{num_files}] {path}: {num_images:,} {images}", flush=True)


def main():
    from tf_pacseg.data import class_names, statistics
    from tf_pacseg.files import atomic_write

    try:
        names = class_names.resolve_class_names(
            FLAGS.class_names, FLAGS.num_classes, FLAGS.data_dir
        )
        report = statistics.dataset_statistics(
            FLAGS.data_dir, names, FLAGS.ignore_label, on_file=_show_progress
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"dataset_stats.py: error: {error}")
    print(statistics.format_table(report))
    output_json = FLAGS.output_json or os.path.join(FLAGS.data_dir, "dataset_stats.json")
    with atomic_write(output_json, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"Wrote {output_json}")


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main)


if __name__ == "__main__":
    run()
