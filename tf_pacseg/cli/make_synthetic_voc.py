r"""Writes a small synthetic dataset in PASCAL VOC's folder layout.

Coloured, textured shapes on a textured background, with VOC's void borders:
learnable by a tiny network in minutes, for tests and the demo. Convert it like
VOC itself:

  python data/make_synthetic_voc.py --output_dir=/tmp/synthetic_voc
  python data/convert_voc.py --data_dir=/tmp/synthetic_voc --output_path=/tmp/records
"""

from absl import flags

from tf_pacseg import cli, constants
from tf_pacseg.data import synthetic

flags.DEFINE_string(
    "output_dir", None, "Folder to write JPEGImages/, SegmentationClass(Aug)/ and ImageSets/ to."
)
flags.DEFINE_integer("num_train", synthetic.NUM_TRAIN, "Training images.", lower_bound=0)
flags.DEFINE_integer("num_val", synthetic.NUM_VAL, "Validation images.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Random seed: the same seed writes the same files.")
flags.DEFINE_integer(
    "num_classes",
    constants.NUM_CLASSES,
    "Classes of the task; objects use classes 1..min(4, num_classes - 1).",
    lower_bound=2,
)

flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main():
    ids = synthetic.make_synthetic_voc(
        FLAGS.output_dir,
        num_train=FLAGS.num_train,
        num_val=FLAGS.num_val,
        seed=FLAGS.seed,
        num_classes=FLAGS.num_classes,
    )
    print(
        f"Wrote {len(ids['train'])} train and {len(ids['val'])} val images to {FLAGS.output_dir}."
    )


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main, uses_tensorflow=False)


if __name__ == "__main__":
    run()
