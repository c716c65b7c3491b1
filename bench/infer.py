"""Inference throughput of the network (images/s), float32, on the devices present.

    python bench/infer.py --base_architecture=resnet_v1_101 --head=pac \
        --height=513 --width=513 --batch_size=1

Random weights and inputs: speed does not depend on them. Runs on whichever
Keras backend is active (KERAS_BACKEND=tensorflow or jax).
"""

import time

from absl import app, flags

flags.DEFINE_enum(
    "base_architecture",
    "resnet_v1_101",
    ["resnet_v1_50", "resnet_v1_101", "resnet_v2_50", "resnet_v2_101"],
    "Backbone.",
)
flags.DEFINE_enum("head", "pac", ["pac", "aspp"], "Segmentation head.")
flags.DEFINE_integer("output_stride", 16, "8 or 16.")
flags.DEFINE_integer("height", 513, "Input height.")
flags.DEFINE_integer("width", 513, "Input width.")
flags.DEFINE_integer("batch_size", 1, "Images per forward pass.")
flags.DEFINE_boolean("jit_compile", False, "Compile the forward pass with XLA.")
flags.DEFINE_integer("warmup", 2, "Untimed forward passes (tracing, autotuning).")
flags.DEFINE_integer("iterations", 10, "Timed forward passes.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import keras
    import numpy as np

    import tf_pacseg

    model = tf_pacseg.build_model(
        FLAGS.base_architecture, FLAGS.head, output_stride=FLAGS.output_stride
    )
    forward = _compiled_forward(model, FLAGS.jit_compile)
    images = np.random.default_rng(0).uniform(
        0, 255, (FLAGS.batch_size, FLAGS.height, FLAGS.width, 3)
    ).astype("float32")
    for _ in range(FLAGS.warmup):
        np.asarray(forward(images))
    start = time.perf_counter()
    for _ in range(FLAGS.iterations):
        np.asarray(forward(images))  # np.asarray waits for the device
    elapsed = time.perf_counter() - start
    images_per_second = FLAGS.iterations * FLAGS.batch_size / elapsed
    print(
        f"{FLAGS.base_architecture}+{FLAGS.head} OS{FLAGS.output_stride} "
        f"{FLAGS.height}x{FLAGS.width} batch {FLAGS.batch_size} float32 "
        f"jit={FLAGS.jit_compile} backend={keras.backend.backend()}: "
        f"{images_per_second:.3f} images/s ({elapsed / FLAGS.iterations * 1000:.0f} ms/batch)"
    )


def _compiled_forward(model, jit_compile):
    backend = __import__("keras").backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    if backend == "jax":
        import jax

        def forward(x):
            return model(x, training=False)

        return jax.jit(forward) if jit_compile else forward
    return lambda x: model(x, training=False)


if __name__ == "__main__":
    app.run(main)
