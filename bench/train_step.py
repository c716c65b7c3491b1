r"""Training-step rate of ours against the original TF1 graph, timed in one run.

Ours is the step train.py runs (forward, loss, backward, cross-replica sum,
update); the original's is its training branch rebuilt in tf.compat.v1
(`tf_pacseg.testing.tf1_training.build_training_graph`): slim's fused BatchNorm
in training mode with its moving-average update ops, boundary-aware loss (or
cross entropy), slim L2 on the conv kernels, momentum on the poly rate. Both
run on one fixed random batch (the input pipeline is left out), each in a
worker process of its own (`--noisolate`: both in this one), in alternating
rounds after a warm-up; the medians and their ratio are printed.

    python bench/train_step.py --crop_size=321 --batch_size=2 --num_gpu=0
    python bench/train_step.py --units_per_block=1,1,1,1 --crop_size=65 --batch_size=2 \
        --repeats=2 --steps=2 --warmup=1   # a smoke test
    KERAS_BACKEND=jax python bench/train_step.py ...   # ours on JAX, the original in a
                                                        # TensorFlow worker

GPU runs (`--num_gpu`, `--mixed_precision`, `--jit_compile`) time ours only
unless `--only=both` is given, as the original ran float32 without XLA.
"""

import dataclasses
import json

import common
import profiling
from absl import flags

from tf_pacseg import cli, constants

flags.DEFINE_enum(
    "base_architecture", "resnet_v1_101", list(constants.BASE_ARCHITECTURES), "Backbone."
)
flags.DEFINE_enum("head", "pac", list(constants.HEADS), "Segmentation head.")
flags.DEFINE_enum("loss", "bal", ["bal", "ce"], "Boundary-aware loss or cross entropy.")
flags.DEFINE_integer("crop_size", 321, "Height and width of the training crops.", lower_bound=1)
flags.DEFINE_integer("batch_size", 2, "Global batch, split over the replicas.", lower_bound=1)
flags.DEFINE_integer("output_stride", 16, "8 or 16.")
flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Compute dtype (ours)."
)
flags.DEFINE_boolean("jit_compile", False, "XLA-compile our forward/backward pass.")
flags.DEFINE_boolean("fine_tune_batch_norm", True, "BatchNorm in training mode.")
flags.DEFINE_boolean("sync_batch_norm", False, "Batch statistics over all replicas (ours).")
flags.DEFINE_list("units_per_block", None, "e.g. 1,1,1,1 for a shallow backbone.")
flags.DEFINE_integer(
    "num_gpu", None, "GPUs to use (default: all visible; 0: the CPU).", lower_bound=0
)
flags.DEFINE_enum(
    "only", None, ["both", "ours", "reference"], "What to time (default: both on the CPU)."
)
flags.DEFINE_integer("repeats", 5, "Alternating rounds; the median round counts.", lower_bound=1)
flags.DEFINE_integer("steps", 3, "Timed steps per round and network.", lower_bound=1)
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, autotuning).", lower_bound=1)
flags.DEFINE_boolean(
    "profile", False, "Also print where our time goes, by op type (the backend's profiler)."
)
flags.DEFINE_boolean(
    "isolate",
    True,
    "Time ours and the original each in a worker process of its own (else both in this one).",
)
flags.DEFINE_enum(
    "worker", None, ["ours", "reference"], "Internal: serve one runner to the timing process."
)
flags.DEFINE_boolean("json", False, "Print one JSON line of the medians instead of a report.")
FLAGS = flags.FLAGS


def _config(num_gpu):
    from tf_pacseg import training

    return training.TrainConfig(
        num_gpu=num_gpu,
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


def random_batch(config, seed=0):
    """(images float32 [N, H, W, 3] in 0..255, labels int32 [N, H, W, 1]) with ignored rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (config.batch_size, config.input_height, config.input_width)
    # Blocky labels, so that BAL sees regions and boundaries as in real data.
    coarse = rng.integers(0, config.num_classes, (shape[0], shape[1] // 16 + 1, shape[2] // 16 + 1))
    labels = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, : shape[1], : shape[2]]
    labels[:, : shape[1] // 8] = constants.IGNORE_LABEL  # Padding, as after a crop.
    images = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    return images, labels[..., None].astype(np.int32)


def make_our_step(config, images, labels):
    """(A callable running one of our training steps on the batch, the model it trains).

    The callable returns when the step is done. The batch is put on the
    devices once: the step reads no input from the host.

    The active Keras backend's engine: `TrainStep` under tf.distribute on
    TensorFlow, `JaxTrainStep` (one XLA program, every local device) on JAX.
    """
    import keras

    from tf_pacseg.training import components

    if keras.backend.backend() == "jax":
        import jax

        from tf_pacseg.training import jax_step

        # As the JAX engine: its batch statistics are global anyway.
        model = components.build_training_model(dataclasses.replace(config, sync_batch_norm=False))
        step = jax_step.JaxTrainStep(model, components.build_optimizer(config), loss=config.loss)
        batch = jax.device_put((images, labels), jax_step.batch_sharding(step.mesh))
    else:
        import tensorflow as tf

        from tf_pacseg.data import malloc
        from tf_pacseg.training import distribute, tf_step

        strategy = distribute.create_strategy(num_gpu=config.num_gpu)
        distribute.check_batch_size(config.batch_size, strategy)
        with strategy.scope():
            model = components.build_training_model(config)
            optimizer = components.build_optimizer(config)
        step = tf_step.TrainStep(
            model, optimizer, strategy, loss=config.loss, jit_compile=config.jit_compile
        )
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
        batches = malloc.iterate(strategy.experimental_distribute_dataset(dataset))  # As train.py.
        batch = next(batches)

    def run():
        float(step(*batch)["loss"])  # float() waits for the device.

    return run, model


def make_reference_step(config, images, labels):
    """A callable running one step of the original's training graph (TF1 session).

    `tf1_training.build_training_graph`: the original `model_fn` in
    training mode (slim's fused BatchNorm with its UPDATE_OPS, BAL or cross
    entropy, slim L2, momentum on the poly rate), with `config`'s settings.
    """
    import tensorflow as tf

    from tf_pacseg.testing import tf1_training

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        step = tf1_training.build_training_graph(
            tf.constant(images),
            tf.constant(labels),
            config.base_architecture,
            config.head,
            output_stride=config.output_stride,
            num_classes=config.num_classes,
            units_per_block=config.units_per_block,
            fine_tune_batch_norm=config.fine_tune_batch_norm,
            batch_norm_decay=config.batch_norm_decay,
            weight_decay=config.weight_decay,
            loss=config.loss,
            initial_learning_rate=config.initial_learning_rate,
            end_learning_rate=config.end_learning_rate,
            power=config.power,
            max_iter=config.max_iter,
            momentum=config.momentum,
        )
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
    fetches = [step["train_op"], step["loss"]]

    def run():
        session.run(fetches)

    return run


def _make_runner(name, config, images, labels):
    """(The callable timing runner `name`, ours or the original; our model or None)."""
    if name == "ours":
        return make_our_step(config, images, labels)
    return make_reference_step(config, images, labels), None


def _describe(name, run, model, config):
    """What the report needs of runner `name` besides its time: FLOPs and profile of ours."""
    if name != "ours":
        return {}
    # A training step costs three forward passes: forward, input and weight gradients.
    info = {"flops": 3 * common.forward_flops(model, config.input_height, config.input_width)}
    if FLAGS.profile:
        info["profile"] = profiling.profile_table(run, FLAGS.steps)
    return info


def _runner_names(config):
    only = FLAGS.only
    if only is None:
        # The original ran float32 without XLA.
        plain = config.mixed_precision == "none" and not config.jit_compile
        only = "both" if plain else "ours"
    return {"both": ["ours", "reference"], "ours": ["ours"], "reference": ["reference"]}[only]


def _time(names, config):
    """(Timings of the runners `names`, {name: `_describe`}): in worker processes or here."""
    if common.runs_in_processes(names, FLAGS.isolate):
        return common.time_in_processes(names, FLAGS.repeats, FLAGS.steps)
    images, labels = random_batch(config)
    runners = {name: _make_runner(name, config, images, labels) for name in names}
    timings = common.time_alternating(
        {name: run for name, (run, _) in runners.items()}, FLAGS.repeats, FLAGS.steps, FLAGS.warmup
    )
    return timings, {name: _describe(name, *runners[name], config) for name in names}


def main():
    import keras

    backend = keras.backend.backend()
    common.quiet_python_logs()
    num_gpu = len(common.accelerators()) if FLAGS.num_gpu is None else FLAGS.num_gpu
    config = _config(num_gpu)
    if config.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    if FLAGS.worker:
        images, labels = random_batch(config)
        run, model = _make_runner(FLAGS.worker, config, images, labels)
        common.serve(run, FLAGS.warmup, lambda: _describe(FLAGS.worker, run, model, config))
        return
    names = _runner_names(config)
    timings, described = _time(names, config)
    if FLAGS.json:
        print(json.dumps(timings))
        return
    notes = []
    if "ours" in described:
        rate = config.batch_size / timings["ours"][0]
        notes.append(
            f"ours: {rate:.1f} images/s; "
            + common.utilisation_line(described["ours"]["flops"], rate, config.mixed_precision)
        )
        notes.extend(described["ours"].get("profile", []))
    units = ",".join(map(str, config.units_per_block)) if config.units_per_block else "full"
    where = (
        "each in its own process"
        if common.runs_in_processes(names, FLAGS.isolate)
        else "in one process"
    )
    common.report(
        f"train_step {config.base_architecture} ({units}) + {config.head}, "
        f"loss {config.loss} + L2, OS{config.output_stride}, crop {FLAGS.crop_size}, "
        f"batch {config.batch_size}, {config.mixed_precision}, "
        f"xla={'on' if config.jit_compile or backend == 'jax' else 'off'}, "
        f"backend {backend}, {num_gpu} accelerator(s); "
        f"median of {FLAGS.repeats} rounds of {FLAGS.steps} steps, {where}",
        timings,
        "step",
        1,
        notes,
    )


if __name__ == "__main__":
    cli.run(main, uses_tensorflow=common.uses_tensorflow())
