r"""Images per second of the training step, on the devices present, with random inputs.

Times `tf_pacseg.trainer.TrainStep` (the step train.py runs: forward, loss,
backward, cross-replica sum, update) on one fixed random batch, so the input
pipeline is left out. The global batch is split over every visible GPU (or
runs on the CPU without one).

    python bench/train_step.py --base_architecture=resnet_v1_101 --crop_size=513 \
        --batch_size=16 --mixed_precision=mixed_float16 --jit_compile
    python bench/train_step.py --units_per_block=1,1,1,1 --crop_size=65 --batch_size=2 \
        --steps=5 --warmup=1   # a CPU smoke test
"""

import os
import sys
import time

from absl import app, flags

# Run as a file, the repository root is not on the import path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_pacseg import constants  # noqa: E402

flags.DEFINE_enum(
    "base_architecture", "resnet_v1_101", list(constants.BASE_ARCHITECTURES), "Backbone."
)
flags.DEFINE_enum("head", "pac", list(constants.HEADS), "Segmentation head.")
flags.DEFINE_enum("loss", "bal", ["bal", "ce"], "Boundary-aware loss or cross entropy.")
flags.DEFINE_integer("crop_size", 513, "Height and width of the training crops.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Global batch, split over the replicas.", lower_bound=1)
flags.DEFINE_integer("output_stride", 16, "8 or 16.")
flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Compute dtype."
)
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the forward/backward pass.")
flags.DEFINE_boolean("fine_tune_batch_norm", True, "BatchNorm in training mode.")
flags.DEFINE_boolean("sync_batch_norm", False, "Batch statistics over all replicas.")
flags.DEFINE_list("units_per_block", None, "e.g. 1,1,1,1 for a shallow backbone.")
flags.DEFINE_integer(
    "num_gpu", None, "GPUs to use (default: all visible; 0: the CPU).", lower_bound=0
)
flags.DEFINE_integer("steps", 20, "Timed steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, compilation).", lower_bound=1)
FLAGS = flags.FLAGS


def _device_description(num_gpu):
    import tensorflow as tf

    if not num_gpu:
        return f"CPU ({os.cpu_count()} cores)"
    gpu = tf.config.list_physical_devices("GPU")[0]
    name = tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
    return f"{num_gpu} x {name}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import numpy as np
    import tensorflow as tf

    from tf_pacseg import distribute, trainer

    num_gpu = FLAGS.num_gpu
    if num_gpu is None:
        num_gpu = len(tf.config.list_physical_devices("GPU"))
    strategy = distribute.create_strategy(num_gpu=num_gpu)
    config = trainer.TrainConfig(
        base_architecture=FLAGS.base_architecture,
        head=FLAGS.head,
        loss=FLAGS.loss,
        output_stride=FLAGS.output_stride,
        batch_size=FLAGS.batch_size,
        input_height=FLAGS.crop_size,
        input_width=FLAGS.crop_size,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        fine_tune_batch_norm=FLAGS.fine_tune_batch_norm,
        sync_batch_norm=FLAGS.sync_batch_norm,
        units_per_block=[int(n) for n in FLAGS.units_per_block] if FLAGS.units_per_block else None,
    )
    per_replica = distribute.check_batch_size(config.batch_size, strategy)
    import keras

    if config.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    with strategy.scope():
        model = trainer.build_training_model(config)
        optimizer = trainer.build_optimizer(config)
    step = trainer.TrainStep(
        model, optimizer, strategy, loss=config.loss, jit_compile=config.jit_compile
    )

    rng = np.random.default_rng(0)
    shape = (config.batch_size, FLAGS.crop_size, FLAGS.crop_size)
    images = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    labels = rng.integers(0, config.num_classes, (*shape, 1)).astype(np.int32)
    labels[:, : FLAGS.crop_size // 8] = constants.IGNORE_LABEL  # Some ignored pixels.
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    start = time.perf_counter()
    for _ in range(FLAGS.warmup):
        outputs = step(*next(batches))
    float(outputs["loss"])  # Wait for the device.
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        outputs = step(*next(batches))
    float(outputs["loss"])
    seconds = (time.perf_counter() - start) / FLAGS.steps

    units = ",".join(map(str, config.units_per_block)) if config.units_per_block else "full"
    print(
        f"train_step {config.base_architecture} ({units}) + {config.head}, loss {config.loss}, "
        f"crop {FLAGS.crop_size}, batch {config.batch_size} ({per_replica}/replica x "
        f"{strategy.num_replicas_in_sync}), {config.mixed_precision}, "
        f"xla={'on' if config.jit_compile else 'off'} on {_device_description(num_gpu)}: "
        f"{config.batch_size / seconds:.2f} images/s, {1 / seconds:.3f} steps/s, "
        f"{1000 * seconds:.1f} ms/step ({FLAGS.steps} steps; warm-up {warmup_seconds:.1f} s)"
    )


if __name__ == "__main__":
    app.run(main)
