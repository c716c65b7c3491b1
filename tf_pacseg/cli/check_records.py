r"""Reads every record of a dataset and names those that training cannot read.

    python data/check_records.py --data_dir=dataset

Checks the train and val records of --data_dir (our shards, or the original's
voc_train.record / voc_val.record) as training reads them: the file framing
and checksums (a file cut short or with changed bytes), the example's
features, the image and label decoding, their sizes, and the label values.
Prints a line per bad record (file, position, id if any, what is wrong, what
to do) and a line per file; exits with status 1 if any record is bad.
"""

import sys

from absl import flags

from tf_pacseg import cli
from tf_pacseg.cli.data_flags import define_label_value_flags

flags.DEFINE_string(
    "data_dir", None, "Folder of the records: the --data_dir of training and evaluation."
)
define_label_value_flags()
flags.DEFINE_integer(
    "num_workers",
    None,
    "Files read at once. Default: one per CPU, at most one per file.",
    lower_bound=1,
)
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main():
    from tf_pacseg.data import record_check

    try:
        paths = record_check.find_all_record_files(FLAGS.data_dir)
    except FileNotFoundError as error:
        sys.exit(f"check_records.py: error: {error}")
    done = []

    def show(report):
        done.append(report)
        for bad in report.bad:
            print(bad)
        print(f"[{len(done)}/{len(paths)}] {report.summary()}", flush=True)

    try:
        reports = record_check.check_record_files(
            paths, FLAGS.num_classes, FLAGS.ignore_label, FLAGS.num_workers, on_report=show
        )
    except OSError as error:
        sys.exit(f"check_records.py: error: {error}")
    num_bad = sum(len(report.bad) for report in reports)
    num_records = sum(report.num_records for report in reports)
    if num_bad:
        damaged = sum(1 for report in reports if report.bad)
        sys.exit(
            f"check_records.py: {num_bad} bad records of {num_records}, in {damaged} of "
            f"{len(reports)} files (listed above with what to do)."
        )
    print(f"All {num_records} records of {len(reports)} files are readable.")


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main)


if __name__ == "__main__":
    run()
