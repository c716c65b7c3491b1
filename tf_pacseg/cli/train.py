r"""Trains the segmentation network (ResNet + PAC/ASPP, boundary-aware loss) on VOC records.

    python train.py --data_dir=dataset --model_dir=model \
        --pre_trained_model=init_checkpoints/resnet_v1_101_beta/model.ckpt
    python train.py --data_dir=dataset --model_dir=model --num_gpu=4 --sync_batch_norm
    KERAS_BACKEND=jax python train.py --data_dir=dataset --model_dir=model ...

The options of the original `_init_.py` keep their names and defaults; every
option is a field of `tf_pacseg.training.TrainConfig`. The Keras backend picks
the engine: TensorFlow (tf.distribute, the default) or JAX (every local
device). Training resumes from the latest checkpoint in --model_dir
(SIGINT/SIGTERM save one before stopping; exit status 128 + the signal).
TensorBoard: model_dir/train and model_dir/eval. evaluate.py and predict.py
take --model_dir directly (model.weights.h5 + model.json); model_dir/export is
an inference SavedModel (images float32 [N, H, W, 3] in 0..255 -> logits).
One run per model_dir at a time: a second is refused, naming the first (pid,
host, command). A full or unwritable disk stops training with one line naming
the file, the space it needs and the free space; the earlier saves stay intact.
A record that cannot be read (a damaged file, an image or label that does not
decode) stops training with one line naming it, nothing saved after the last
checkpoint (python data/check_records.py --data_dir=... lists every bad
record); --skip_bad_records leaves such records out instead.

Several machines (TensorFlow engine): set TF_CONFIG on each worker and run the
same command on all of them (MultiWorkerMirroredStrategy; --num_gpu GPUs per
worker, --batch_size is split over all GPUs of all workers; worker 0 writes
--model_dir, which must be a path all workers can read), e.g. on the second of
two workers:

    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 1}}' python train.py ...
"""

import logging as std_logging
import sys

from absl import logging

from tf_pacseg import cli
from tf_pacseg.cli import train_flags as training_flags

training_flags.define_flags()


def main():
    logging.set_verbosity(logging.INFO)
    # TensorFlow's own INFO records (saver, SavedModel internals) drown the progress lines.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    from tf_pacseg import training

    try:
        result = training.train(training_flags.config_from_flags())
    except (
        FileNotFoundError,
        ValueError,
        training.NonFiniteLossError,
        training.RunLockedError,
        training.SaveError,
    ) as error:
        sys.exit(f"train.py: {error}")
    if result.interrupted:
        sys.exit(128 + result.interrupted)


def run():
    """Console entry point `pacseg-train` (the shim at the top calls it too)."""
    cli.run(main)


if __name__ == "__main__":
    run()
