r"""Converts a checkpoint of the original TF1 code into a Keras weights file.

    python checkpoints/convert_tf1.py --checkpoint=model/model.ckpt-30000 \
        --output_path=checkpoints/resnet_v1_101_pac_bal.weights.h5

Writes the weights and, beside them, a .json of the architecture read from
the checkpoint's variable names; evaluate.py and predict.py take either file.
"""

import sys

from absl import flags

from tf_pacseg import cli
from tf_pacseg.cli.model_flags import (
    architecture_overrides,
    define_architecture_override_flags,
)

flags.DEFINE_string(
    "checkpoint", None, "TF1 checkpoint prefix, or a directory holding a `checkpoint` file."
)
flags.DEFINE_string(
    "output_path", None, "Where to write the Keras weights; must end in .weights.h5."
)
define_architecture_override_flags()
flags.mark_flags_as_required(["checkpoint", "output_path"])
FLAGS = flags.FLAGS


def main():
    from tf_pacseg.weights.saving import convert_tf1_checkpoint
    from tf_pacseg.weights.tf1_checkpoint import CheckpointMismatchError

    try:
        model, report = convert_tf1_checkpoint(
            FLAGS.checkpoint,
            FLAGS.output_path,
            **architecture_overrides(),
        )
    except (FileNotFoundError, ValueError, CheckpointMismatchError) as error:
        sys.exit(f"convert_tf1.py: {error}")
    print(report.summary())
    print(f"architecture: {model.architecture()}")
    print(f"wrote {FLAGS.output_path} ({model.count_params():,} parameters)")


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main)


if __name__ == "__main__":
    run()
