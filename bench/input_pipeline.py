r"""Training images/s of the tf.data input pipeline, on 1 CPU core and on all of them.

Writes TFRecords of synthetic VOC-like examples (JPEG images and PNG labels
of about 500x375, `tf_pacseg.data.synthetic` + `tf_pacseg.data.records`), then times
`pipelines.train_dataset` (parse, random scale, pad, crop, flip, batch)
with its threads limited to each core count in turn. The per-core rate tells
how many CPU cores keep a training step fed: cores needed = images/s the
accelerators consume / images/s per core.

    python bench/input_pipeline.py --crop_size=513 --batch_size=16
    python bench/input_pipeline.py --num_images=8 --crop_size=65 --batch_size=2 \
        --batches=3 --warmup=1   # a smoke test
"""

import os
import tempfile
import time

import common
from absl import flags

from tf_pacseg import cli, constants

flags.DEFINE_integer("num_images", 64, "Examples written (one epoch).", lower_bound=1)
flags.DEFINE_integer("image_height", 375, "Height of the written images.", lower_bound=20)
flags.DEFINE_integer("image_width", 500, "Width of the written images.", lower_bound=20)
flags.DEFINE_integer(
    "crop_size", constants.CROP_SIZE[0], "Height and width of the training crops.", lower_bound=1
)
flags.DEFINE_integer("batch_size", 16, "Examples per batch.", lower_bound=1)
flags.DEFINE_list("cores", None, "Core counts to time (default: 1 and all the process may use).")
flags.DEFINE_integer("batches", 20, "Timed batches per core count.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed batches first (buffers filling).", lower_bound=1)
FLAGS = flags.FLAGS


def write_records(path, num_images, height, width, seed=0):
    """Writes `num_images` synthetic examples to the TFRecord file `path`."""
    import numpy as np
    import tensorflow as tf

    from tf_pacseg.data import records, synthetic

    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(num_images):
            image, label = synthetic.make_sample(rng, height, width)
            writer.write(
                records.encode_example(
                    tf.io.encode_jpeg(image, quality=95).numpy(),
                    tf.io.encode_png(label[..., None]).numpy(),
                    height,
                    width,
                )
            )


def images_per_second(files, cores):
    """Training images/s of the pipeline with `cores` threads (tf.data and the ops in it)."""
    import tensorflow as tf

    from tf_pacseg.data import pipelines

    dataset = pipelines.train_dataset(
        files,
        FLAGS.batch_size,
        crop_size=(FLAGS.crop_size, FLAGS.crop_size),
        shuffle_buffer=FLAGS.num_images,
        repeat=True,
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.threading.max_intra_op_parallelism = 1
    batches = iter(dataset.with_options(options))
    for _ in range(FLAGS.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(batches)
    return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


def main():
    common.quiet_python_logs()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    available = available or os.cpu_count()
    cores = sorted({int(n) for n in FLAGS.cores} if FLAGS.cores else {1, available})
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "train-00000-of-00001.tfrecord")
        write_records(path, FLAGS.num_images, FLAGS.image_height, FLAGS.image_width)
        rates = {n: images_per_second([path], n) for n in cores}
    print(
        f"input pipeline: {FLAGS.num_images} synthetic {FLAGS.image_width}x{FLAGS.image_height} "
        f"JPEG/PNG records -> parse, scale, pad, crop {FLAGS.crop_size}, flip, batch "
        f"{FLAGS.batch_size}; {FLAGS.batches} batches after {FLAGS.warmup}"
    )
    print(f"machine: {common.machine_description()}")
    for n, rate in rates.items():
        print(f"  {n:3d} core(s): {rate:8.1f} images/s  {rate / n:7.1f} images/s per core")
    print(common.IDLE_REMINDER)


if __name__ == "__main__":
    cli.run(main)
