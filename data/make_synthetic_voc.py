r"""Writes a small synthetic dataset in PASCAL VOC's folder layout.

Coloured, textured shapes on a textured background, with VOC's void borders:
learnable by a tiny network in minutes, for tests and the demo. Convert it like
VOC itself:

  python data/make_synthetic_voc.py --output_dir=/tmp/synthetic_voc
  python data/convert_voc.py --data_dir=/tmp/synthetic_voc --output_path=/tmp/records
"""

import os
import sys

from absl import app, flags

# Run as a file (`python data/make_synthetic_voc.py`), the repository root is
# not on the import path; put it there so `tf_pacseg` imports without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_pacseg import constants, synthetic  # noqa: E402

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder to write JPEGImages/, SegmentationClass(Aug)/ and ImageSets/ to."
)
_NUM_TRAIN = flags.DEFINE_integer("num_train", 32, "Training images.", lower_bound=0)
_NUM_VAL = flags.DEFINE_integer("num_val", 8, "Validation images.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed: the same seed writes the same files.")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes",
    constants.NUM_CLASSES,
    "Classes of the task; objects use classes 1..min(4, num_classes - 1).",
    lower_bound=2,
)

flags.mark_flag_as_required("output_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    ids = synthetic.make_synthetic_voc(
        _OUTPUT_DIR.value,
        num_train=_NUM_TRAIN.value,
        num_val=_NUM_VAL.value,
        seed=_SEED.value,
        num_classes=_NUM_CLASSES.value,
    )
    print(
        f"Wrote {len(ids['train'])} train and {len(ids['val'])} val images to {_OUTPUT_DIR.value}."
    )


if __name__ == "__main__":
    app.run(main)
