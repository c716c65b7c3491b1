r"""Trains the segmentation network (ResNet + PAC/ASPP, boundary-aware loss) on VOC records.

    python train.py --data_dir=dataset --model_dir=model \
        --pre_trained_model=init_checkpoints/resnet_v1_101_beta/model.ckpt
    python train.py --data_dir=dataset --model_dir=model --num_gpu=4 --sync_batch_norm

The options of the original `_init_.py` keep their names and defaults. Training
resumes from the latest checkpoint in --model_dir (SIGINT/SIGTERM save one
before stopping; exit status 128 + the signal). TensorBoard: model_dir/train
and model_dir/eval. evaluate.py and predict.py take --model_dir directly
(model.weights.h5 + model.json); model_dir/export is an inference SavedModel
(images float32 [N, H, W, 3] in 0..255 -> logits).

Several machines: set TF_CONFIG on each worker and run the same command on all
of them (MultiWorkerMirroredStrategy; --num_gpu GPUs per worker, --batch_size
is split over all GPUs of all workers; worker 0 writes --model_dir, which must
be a path all workers can read), e.g. on the second of two workers:

    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 1}}' python train.py ...
"""

import logging as std_logging
import sys

from absl import app, flags, logging

from tf_pacseg import constants

# --- The original's options: same names, defaults and meaning. ---
flags.DEFINE_integer(
    "num_gpu",
    1,
    "GPUs to train on, per machine (0: the CPU). The global --batch_size is split evenly "
    "over all replicas (GPUs x workers).",
)
flags.DEFINE_enum(
    "base_architecture",
    "resnet_v1_101",
    list(constants.BASE_ARCHITECTURES),
    "Backbone: DeepLab's ResNet v1 'beta' or the pre-activation ResNet v2.",
)
flags.DEFINE_string(
    "pre_trained_model",
    "./init_checkpoints/<arch>/model.ckpt",
    "Backbone initialisation: a TF1 ImageNet checkpoint prefix (e.g. DeepLab's "
    "resnet_v1_101_beta), or a *.weights.h5 (with its .json) / directory holding "
    "model.weights.h5 whose backbone is loaded. <arch> is replaced by "
    "--base_architecture. Empty (--pre_trained_model=) trains from scratch. Ignored when "
    "--model_dir holds a checkpoint to resume from.",
)
flags.DEFINE_string(
    "model_dir",
    "./model",
    "Run directory: checkpoints, TensorBoard summaries (train/, eval/), "
    "model.weights.h5 + model.json and the exported SavedModel (export/).",
)
flags.DEFINE_string(
    "data_dir",
    "./dataset/",
    "Folder of the TFRecords: train-*/val-*-of-*.tfrecord (data/convert_voc.py) or the "
    "original's voc_train.record / voc_val.record.",
)
flags.DEFINE_boolean(
    "clean_model_dir", False, "Delete --model_dir first, starting over instead of resuming."
)
flags.DEFINE_integer("train_epochs", 46, "Epochs to train (unless --max_iter comes first).")
flags.DEFINE_integer(
    "epochs_per_eval", 1, "Evaluate on the val records every this many epochs (0: never)."
)
flags.DEFINE_integer("batch_size", 16, "Global batch size, split over all replicas.")
flags.DEFINE_integer(
    "max_iter",
    30000,
    "Steps of the 'poly' learning-rate schedule; training also stops after this many "
    "steps from --initial_global_step.",
)
flags.DEFINE_integer(
    "initial_global_step",
    0,
    "Global step a fresh run starts at, when fine-tuning a trained model: the schedule and "
    "--max_iter count from it.",
)
flags.DEFINE_integer("output_stride", 16, "Input size / feature map size: 8 or 16.")
flags.DEFINE_float("initial_learning_rate", 0.007, "Learning rate at the first step.")
flags.DEFINE_float("end_learning_rate", 0, "Learning rate reached after --max_iter steps.")
flags.DEFINE_float("power", 0.9, "Power of the 'poly' learning-rate schedule.")
flags.DEFINE_float("momentum", 0.9, "Momentum of the (TF1-style) momentum optimizer.")
flags.DEFINE_float(
    "weight_decay",
    0.0001,
    "L2 regularisation: weight_decay * sum(w^2) / 2 per conv kernel (1e-4 for ResNet).",
)
flags.DEFINE_boolean(
    "fine_tune_batch_norm",
    True,
    "True: BatchNorm normalises with batch statistics and updates its moving statistics, "
    "its beta/gamma stay fixed. False: moving statistics are used and beta/gamma train. "
    "Use False when the per-replica batch is small.",
)
flags.DEFINE_float(
    "batch_norm_decay", 0.9997, "Moving-average decay of the head's BatchNorm (backbone: 0.95)."
)
flags.DEFINE_boolean(
    "debug",
    False,
    "Check every op for NaN/inf (tf.debugging.enable_check_numerics), naming the first "
    "op that produces one. Slow.",
)
flags.DEFINE_integer("num_classes", 21, "Number of classes to predict.")
flags.DEFINE_integer("input_height", 513, "Training crop height.")
flags.DEFINE_integer("input_width", 513, "Training crop width.")
flags.DEFINE_integer("input_depth", 3, "Image channels; only 3 (RGB) is supported.")
flags.DEFINE_float("min_scale", 0.5, "Smallest random scale of the training augmentation.")
flags.DEFINE_float("max_scale", 2.0, "Largest random scale of the training augmentation.")
flags.DEFINE_integer(
    "ignore_label", 255, "Label value of pixels left out of the loss and the metrics."
)

# --- New options. ---
flags.DEFINE_enum(
    "head", "pac", list(constants.HEADS), "pac: Pyramid Atrous Conv; aspp: DeepLabV3."
)
flags.DEFINE_enum("loss", "bal", ["bal", "ce"], "bal: boundary-aware loss; ce: cross entropy.")
flags.DEFINE_boolean(
    "sync_batch_norm", False, "Batch statistics over all replicas instead of per replica."
)
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    ["none", "mixed_float16", "mixed_bfloat16"],
    "Compute in float16 (with dynamic loss scaling) or bfloat16; variables stay float32.",
)
flags.DEFINE_boolean(
    "jit_compile", False, "Compile each replica's forward and backward pass with XLA."
)
flags.DEFINE_integer(
    "log_every_n_steps", 10, "Progress line and TensorBoard scalars every this many steps."
)
flags.DEFINE_integer(
    "save_checkpoints_steps",
    1000,
    "Checkpoint (and model.weights.h5) every this many steps; also before each "
    "evaluation, on SIGINT/SIGTERM and at the end.",
)
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in --model_dir.")
flags.DEFINE_integer(
    "seed", None, "Random seed of initialisation, dropout and input order (default: random)."
)
flags.DEFINE_list(
    "units_per_block",
    None,
    "Bottleneck units in block1..block4, e.g. 1,1,1,1: a shallower backbone for tests and "
    "demos (default: the architecture's).",
)
FLAGS = flags.FLAGS


def _config():
    from tf_pacseg.training import TrainConfig

    if FLAGS.input_depth != 3:
        raise ValueError(f"--input_depth must be 3 (RGB images). Received: {FLAGS.input_depth}")
    units = FLAGS.units_per_block
    return TrainConfig(
        num_gpu=FLAGS.num_gpu,
        model_dir=FLAGS.model_dir,
        data_dir=FLAGS.data_dir,
        pre_trained_model=FLAGS.pre_trained_model,
        clean_model_dir=FLAGS.clean_model_dir,
        base_architecture=FLAGS.base_architecture,
        head=FLAGS.head,
        output_stride=FLAGS.output_stride,
        num_classes=FLAGS.num_classes,
        batch_norm_decay=FLAGS.batch_norm_decay,
        weight_decay=FLAGS.weight_decay,
        fine_tune_batch_norm=FLAGS.fine_tune_batch_norm,
        sync_batch_norm=FLAGS.sync_batch_norm,
        units_per_block=tuple(int(n) for n in units) if units else None,
        loss=FLAGS.loss,
        batch_size=FLAGS.batch_size,
        train_epochs=FLAGS.train_epochs,
        epochs_per_eval=FLAGS.epochs_per_eval,
        max_iter=FLAGS.max_iter,
        initial_global_step=FLAGS.initial_global_step,
        initial_learning_rate=FLAGS.initial_learning_rate,
        end_learning_rate=FLAGS.end_learning_rate,
        power=FLAGS.power,
        momentum=FLAGS.momentum,
        input_height=FLAGS.input_height,
        input_width=FLAGS.input_width,
        min_scale=FLAGS.min_scale,
        max_scale=FLAGS.max_scale,
        ignore_label=FLAGS.ignore_label,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        debug=FLAGS.debug,
        log_every_n_steps=FLAGS.log_every_n_steps,
        save_checkpoints_steps=FLAGS.save_checkpoints_steps,
        keep_checkpoint_max=FLAGS.keep_checkpoint_max,
        seed=FLAGS.seed,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    # TensorFlow's own INFO records (saver, SavedModel internals) drown the progress lines.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    from tf_pacseg import training

    try:
        result = training.train(_config())
    except (FileNotFoundError, ValueError, training.NonFiniteLossError) as error:
        sys.exit(f"train.py: {error}")
    if result.interrupted:
        sys.exit(128 + result.interrupted)


def run():
    """Console entry point `pacseg-train`."""
    app.run(main)


if __name__ == "__main__":
    run()
