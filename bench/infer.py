r"""Inference rate of ours (Keras, and its exports' runtimes) against the original TF1 graph.

Ours is the network evaluate.py and predict.py run (`--network=inference`:
BatchNorms folded into the convolutions; `--network=winograd`: also with
`--winograd`), or `tf_pacseg.build_model`'s in inference mode
(`--network=unfolded`); a `tf.function`, or a `jax.jit` on JAX. The
original's is its inference graph rebuilt in tf.compat.v1
(`tf_pacseg.testing.tf1_network.build_reference_graph`) in a session. By
default both hold the same random weights (a TF1 checkpoint written by the
reference and loaded into ours, the largest logit difference is printed).
Same random images for both, each runner in a worker process of its own
(`--noisolate`: all in this one), alternating rounds after a warm-up; the
medians and their ratios to the original's are printed.

`--runtimes` adds our model exported (at the benchmark's size, into a
temporary folder, by `tf_pacseg.export.exporter.export_model`) and run by
onnxruntime (`onnxruntime`) or OpenVINO's CPU plugin in float32 (`openvino`)
or bfloat16 (`openvino_bf16`), each with its largest logit difference from
Keras; the exports need the TensorFlow backend and their extras.

    python bench/infer.py --base_architecture=resnet_v1_101 --head=pac \
        --height=513 --width=513 --batch_size=1
    python bench/infer.py --units_per_block=1,1,1,1 --height=65 --width=65 \
        --repeats=2 --iterations=2 --warmup=1   # a smoke test
    python bench/infer.py --runtimes=keras,onnxruntime,openvino,reference ...
    KERAS_BACKEND=jax python bench/infer.py ...   # ours on JAX, the original in a
                                                  # TensorFlow worker
"""

import functools
import json
import os
import tempfile

import common
import profiling
from absl import flags

from tf_pacseg import cli, constants

# Runners: ours in Keras, our exports in their runtimes, the original TF1 graph.
RUNTIMES = ("keras", "onnxruntime", "openvino", "openvino_bf16", "reference")
# Exported runners: (export format, OpenVINO precision).
_EXPORTS = {
    "onnxruntime": ("onnx", "f32"),
    "openvino": ("openvino", "f32"),
    "openvino_bf16": ("openvino", "bf16"),
}
_ONLY = {"both": ["keras", "reference"], "ours": ["keras"], "reference": ["reference"]}

flags.DEFINE_enum(
    "base_architecture", "resnet_v1_101", list(constants.BASE_ARCHITECTURES), "Backbone."
)
flags.DEFINE_enum("head", "pac", list(constants.HEADS), "Segmentation head.")
flags.DEFINE_integer("output_stride", 16, "8 or 16.")
flags.DEFINE_integer("height", 513, "Input height.", lower_bound=1)
flags.DEFINE_integer("width", 513, "Input width.", lower_bound=1)
flags.DEFINE_integer("batch_size", 1, "Images per forward pass.", lower_bound=1)
flags.DEFINE_list("units_per_block", None, "e.g. 1,1,1,1 for a shallow backbone.")
flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Compute dtype (ours)."
)
flags.DEFINE_enum(
    "network",
    "inference",
    ["inference", "winograd", "unfolded"],
    "Ours: what evaluate.py and predict.py run (BatchNorms folded), the same with "
    "--winograd, or the network as built for training.",
)
flags.DEFINE_boolean(
    "jit_compile", False, "XLA-compile our forward pass (TensorFlow; JAX always compiles)."
)
flags.DEFINE_boolean(
    "same_weights", True, "Load the reference's random weights into ours (else both random)."
)
flags.DEFINE_enum("only", "both", ["both", "ours", "reference"], "What to time.")
flags.DEFINE_list(
    "runtimes",
    None,
    f"What to time, of {','.join(RUNTIMES)} (default: as --only says; not with --only).",
)
flags.DEFINE_integer("repeats", 5, "Alternating rounds; the median round counts.", lower_bound=1)
flags.DEFINE_integer("iterations", 3, "Timed forward passes per round and network.", lower_bound=1)
flags.DEFINE_integer("warmup", 2, "Untimed forward passes first (tracing).", lower_bound=1)
flags.DEFINE_boolean(
    "profile", False, "Also print where our time goes, by op type (the backend's profiler)."
)
flags.DEFINE_boolean(
    "isolate",
    True,
    "Time each runner in a worker process of its own (else all in this one).",
)
flags.DEFINE_enum(
    "worker", None, list(RUNTIMES), "Internal: serve one runner to the timing process."
)
flags.DEFINE_string("worker_dir", None, "Internal: the weights and exports the workers share.")
flags.DEFINE_boolean("json", False, "Print one JSON line of the timings instead of a report.")
FLAGS = flags.FLAGS


def _units_per_block():
    return [int(n) for n in FLAGS.units_per_block] if FLAGS.units_per_block else None


def make_our_forward(images, checkpoint=None):
    """(A callable running our forward pass on `images`, returning numpy logits; the model).

    On JAX the images are put on the devices once, split over them along the
    batch: the timed calls read no input from the host.

    Args:
        images: float32 [N, H, W, 3].
        checkpoint: str or None. A TF1 checkpoint prefix to load.
    """
    import keras
    import numpy as np

    import tf_pacseg

    model = tf_pacseg.build_model(
        FLAGS.base_architecture,
        FLAGS.head,
        output_stride=FLAGS.output_stride,
        units_per_block=_units_per_block(),
    )
    if checkpoint:
        from tf_pacseg.weights import tf1_checkpoint

        tf1_checkpoint.load_tf1_checkpoint(model, checkpoint)
    network = model
    if FLAGS.network != "unfolded":
        from tf_pacseg.model import folding

        network = folding.fold_batch_norms(model, winograd=FLAGS.network == "winograd")
    if keras.backend.backend() == "jax":
        import jax

        # The weights as arguments, not as constants folded into the program.
        weights = (
            [v.value for v in network.trainable_variables],
            [v.value for v in network.non_trainable_variables],
        )
        stateless = jax.jit(
            lambda weights, x: network.stateless_call(*weights, x, training=False)[0]
        )
        from tf_pacseg.training import jax_step

        mesh = jax_step.data_parallel_mesh()
        if len(images) % mesh.size == 0:
            images = jax.device_put(images, jax_step.batch_sharding(mesh))

        def forward(x):
            return stateless(weights, x)
    else:
        import tensorflow as tf

        forward = tf.function(lambda x: network(x, training=False), jit_compile=FLAGS.jit_compile)

    def run():
        return np.asarray(forward(images))  # Waits for the device.

    return run, model


def make_reference_forward(images, checkpoint=None):
    """A callable running the original's inference graph on `images` (TF1 session)."""
    import tensorflow as tf

    from tf_pacseg.testing import tf1_network

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        logits = tf1_network.build_reference_graph(
            tf.constant(images),
            FLAGS.base_architecture,
            FLAGS.head,
            FLAGS.output_stride,
            constants.NUM_CLASSES,
            units_per_block=_units_per_block(),
        )
        session = v1.Session(graph=graph)
        if checkpoint:
            v1.train.Saver().restore(session, checkpoint)
        else:
            session.run(v1.global_variables_initializer())

    def run():
        return session.run(logits)

    return run


def _write_checkpoint(directory):
    """Writes the reference's random weights as a TF1 checkpoint into `directory`."""
    from tf_pacseg.testing import tf1_checkpoints

    tf1_checkpoints.write_reference_checkpoint(
        os.path.join(directory, "model.ckpt"),
        FLAGS.base_architecture,
        FLAGS.head,
        output_stride=FLAGS.output_stride,
        units_per_block=_units_per_block(),
    )


def selected_runtimes():
    """The runners to time, in order: --runtimes, else those that --only names."""
    if not FLAGS.runtimes:
        return _ONLY[FLAGS.only]
    if FLAGS.only != "both":
        raise ValueError("Give --runtimes or --only, not both.")
    unknown = [name for name in FLAGS.runtimes if name not in RUNTIMES]
    if unknown:
        raise ValueError(f"Unknown --runtimes {unknown}: expected some of {', '.join(RUNTIMES)}.")
    return list(dict.fromkeys(FLAGS.runtimes))


def make_exported_forward(model, images, name, directory):
    """A callable running `model`, exported for runner `name` into `directory`, on `images`."""
    from tf_pacseg.export.exporter import export_model
    from tf_pacseg.export.formats import SUFFIXES
    from tf_pacseg.inference import runtimes

    format, precision = _EXPORTS[name]
    path = os.path.join(directory, f"model{SUFFIXES[format]}")
    if not os.path.exists(path):  # openvino and openvino_bf16 share one export.
        export_model(model, format, path, input_size=(FLAGS.height, FLAGS.width))
    exported = runtimes.load_exported_model(path, precision)
    return functools.partial(exported, images)


def make_runners(names, images, checkpoint, directory):
    """({name: callable returning numpy logits} in the order of `names`, our model or None)."""
    runners, ours, model = {}, None, None
    if any(name != "reference" for name in names):
        ours, model = make_our_forward(images, checkpoint)
    for name in names:
        if name == "keras":
            runners[name] = ours
        elif name in _EXPORTS:
            runners[name] = make_exported_forward(model, images, name, directory)
        else:
            runners[name] = make_reference_forward(images, checkpoint)
    return runners, model


def _describe(name, run, model, directory):
    """What the report needs of runner `name` besides its time.

    Its logits (saved into `directory`, for the differences), and for ours
    the FLOPs and, with --profile, the op-type table.
    """
    import numpy as np

    path = os.path.join(directory, f"{name}.logits.npy")
    np.save(path, run())
    info = {"logits": path}
    if name == "keras":
        info["flops"] = common.forward_flops(model, FLAGS.height, FLAGS.width)
        if FLAGS.profile:
            info["profile"] = profiling.profile_table(run, FLAGS.iterations)
    return info


def _difference_note(described, same_weights):
    """ "max |logit difference| from keras: …" of every runner holding our weights."""
    import numpy as np

    if "keras" not in described:
        return None
    expected = np.load(described["keras"]["logits"])
    differences = [
        f"{name} {float(np.abs(np.load(info['logits']) - expected).max()):.2g}"
        for name, info in described.items()
        if name != "keras" and (name != "reference" or same_weights)
    ]
    return "max |logit difference| from keras: " + ", ".join(differences) if differences else None


def _images():
    import numpy as np

    images = np.random.default_rng(0).uniform(
        0, 255, (FLAGS.batch_size, FLAGS.height, FLAGS.width, 3)
    )
    return images.astype("float32")


def _checkpoint(directory):
    """The TF1 checkpoint of the shared random weights in `directory`, or None."""
    prefix = os.path.join(directory, "model.ckpt")
    return prefix if os.path.exists(prefix + ".index") else None


def _serve_worker():
    """--worker: builds one runner (on the weights in --worker_dir) and serves it."""
    runners, model = make_runners(
        [FLAGS.worker], _images(), _checkpoint(FLAGS.worker_dir), FLAGS.worker_dir
    )
    run = runners[FLAGS.worker]
    common.serve(run, FLAGS.warmup, lambda: _describe(FLAGS.worker, run, model, FLAGS.worker_dir))


def _time(names, directory):
    """(Timings of the runners `names`, {name: `_describe`}): in worker processes or here."""
    if common.runs_in_processes(names, FLAGS.isolate):
        extra_args = [f"--worker_dir={directory}"]
        return common.time_in_processes(names, FLAGS.repeats, FLAGS.iterations, extra_args)
    runners, model = make_runners(names, _images(), _checkpoint(directory), directory)
    described = {name: _describe(name, run, model, directory) for name, run in runners.items()}
    timings = common.time_alternating(runners, FLAGS.repeats, FLAGS.iterations, FLAGS.warmup)
    return timings, described


def main():
    import keras

    common.quiet_python_logs()
    backend = keras.backend.backend()
    if FLAGS.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(FLAGS.mixed_precision)
    if FLAGS.worker:
        _serve_worker()
        return
    names = selected_runtimes()
    # The same weights need the reference's checkpoint writer, on TensorFlow.
    same_weights = (
        FLAGS.same_weights and "reference" in names and len(names) > 1 and backend == "tensorflow"
    )
    with tempfile.TemporaryDirectory() as directory:
        if same_weights:
            _write_checkpoint(directory)
        timings, described = _time(names, directory)
        notes = [_difference_note(described, same_weights)]
    if FLAGS.json:
        print(json.dumps(timings))
        return
    if "keras" in described:
        rate = FLAGS.batch_size / timings["keras"][0]
        notes.append(
            f"ours: {rate:.1f} images/s; "
            + common.utilisation_line(described["keras"]["flops"], rate, FLAGS.mixed_precision)
        )
        notes.extend(described["keras"].get("profile", []))
    units = ",".join(FLAGS.units_per_block) if FLAGS.units_per_block else "full"
    weights = "same random weights" if same_weights else "independent random weights"
    xla = FLAGS.jit_compile or backend == "jax"
    where = (
        "each in its own process"
        if common.runs_in_processes(names, FLAGS.isolate)
        else "in one process"
    )
    common.report(
        f"inference {FLAGS.base_architecture} ({units}) + {FLAGS.head}, OS{FLAGS.output_stride}, "
        f"{FLAGS.height}x{FLAGS.width}, batch {FLAGS.batch_size}, {FLAGS.mixed_precision}, "
        f"{FLAGS.network} network, xla={'on' if xla else 'off'}, backend {backend}, "
        f"{len(common.accelerators())} accelerator(s); {weights}; "
        f"median of {FLAGS.repeats} rounds of {FLAGS.iterations} passes, {where}",
        timings,
        "image",
        FLAGS.batch_size,
        [note for note in notes if note],
    )


if __name__ == "__main__":
    cli.run(main, uses_tensorflow=common.uses_tensorflow())
