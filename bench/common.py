"""What the benchmark scripts share: the machine, alternating timing, the report."""

import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

IDLE_REMINDER = (
    "Timings are only meaningful on an otherwise idle machine: stop other jobs, "
    "and compare figures taken in the same run."
)


def uses_tensorflow():
    """Whether the Keras backend is TensorFlow (`KERAS_BACKEND`, TensorFlow when unset).

    Read from the environment, before Keras loads: on the JAX backend the
    benchmarks of ours import no TensorFlow, so they run where it is not installed.
    """
    return os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


def quiet_python_logs():
    """Hides TensorFlow's and JAX's Python-side notices (strategies, deprecations, TPU probe)."""
    for name in ("tensorflow", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def time_reference_in_subprocess(script):
    """The original's timing from `script --only=reference --json`, run on TensorFlow.

    For ours on another Keras backend: the same flags, in a subprocess with
    `KERAS_BACKEND=tensorflow`, after ours (not alternated).
    """
    argv = [a for a in sys.argv[1:] if not a.startswith(("--only", "--runtimes", "--json"))]
    result = subprocess.run(
        [sys.executable, os.path.abspath(script), *argv, "--only=reference", "--json"],
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["reference"]


def accelerators():
    """Names of the GPUs (or other accelerators) the active Keras backend sees."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    import tensorflow as tf

    return [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]


# Dense peak FLOP/s of one device, by `jax.Device.device_kind` prefix: (16-bit, float32).
# float32 is the TF32 tensor-core rate, which XLA uses for float32 convolutions on
# these GPUs by default.
_PEAK_FLOPS = {
    "NVIDIA H200": (989e12, 495e12),
    "NVIDIA H100": (989e12, 495e12),
    "NVIDIA A100": (312e12, 156e12),
}


def peak_flops(precision):
    """Summed peak FLOP/s of the accelerators in use at `precision`, or None if unknown.

    Args:
        precision: str. "none" (float32), "mixed_float16" or "mixed_bfloat16".
    """
    names = accelerators()
    peaks = [
        next((p for prefix, p in _PEAK_FLOPS.items() if name.startswith(prefix)), None)
        for name in names
    ]
    if not names or None in peaks:
        return None
    return sum(p[0] if precision.startswith("mixed") else p[1] for p in peaks)


def forward_flops(model, height, width):
    """FLOPs of one image through `model` in inference mode, as the compiler counts them.

    JAX: XLA's cost analysis of the compiled forward pass; TensorFlow: the
    graph profiler's float operations. Multiply-adds count as two FLOPs.
    """
    import keras
    import numpy as np

    shape = (1, height, width, 3)
    if keras.backend.backend() == "jax":
        import jax

        weights = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        forward = jax.jit(lambda w, x: model.stateless_call(*w, x, training=False)[0])
        cost = forward.lower(weights, np.zeros(shape, "float32")).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"])
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def utilisation_line(flops_per_unit, units_per_second, precision):
    """ "model FLOPs per image … and MFU …" for the report."""
    line = f"model FLOPs per image {flops_per_unit / 1e9:.1f} G"
    peak = peak_flops(precision)
    if peak:
        line += f"; model FLOP utilisation {flops_per_unit * units_per_second / peak:.1%} of peak"
    return line


def machine_description():
    """CPU model, cores usable by this process, and the accelerators."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    names = accelerators()
    devices = ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names)) or "no GPU"
    return f"{model}, {cores} of {os.cpu_count()} CPU cores; {devices}"


def time_alternating(runners, repeats, iterations, warmup):
    """Median seconds per iteration of each runner, timed in alternation.

    Args:
        runners: dict {name: callable}. Each call runs one iteration and
            returns only once its work is done.
        repeats: int. Rounds; each round times `iterations` calls of every
            runner in turn, so slow drifts of the machine hit all alike.
        iterations: int. Calls per runner and round.
        warmup: int. Untimed calls of each runner first (tracing, autotuning).

    Returns:
        dict {name: (median seconds per call, [seconds per call of each round])}.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    rounds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(iterations):
                run()
            rounds[name].append((time.perf_counter() - start) / iterations)
    return {name: (statistics.median(times), times) for name, times in rounds.items()}


# How the report names runners; others by their own name.
_LABELS = {"keras": "ours (Keras)", "reference": "original TF1 graph"}


def report(title, timings, unit, units_per_call, notes=()):
    """Prints the machine, each runner's median with its rounds, and its ratio to the original.

    Args:
        title: str. The configuration.
        timings: dict from `time_alternating`, {runner name: timing}, e.g.
            "ours" and/or "reference" (the original); printed in its order.
        unit: str. What one call processes, e.g. "image" or "step".
        units_per_call: int. The batch size for images, 1 for steps.
        notes: sequence of str. Lines printed after the timings.
    """
    print(title)
    print(f"machine: {machine_description()}")
    for name, (median, times) in timings.items():
        rounds = ", ".join(f"{t * 1000:.0f}" for t in times)
        print(
            f"  {_LABELS.get(name, name):<18} {median * 1000:8.1f} ms/{unit}  "
            f"{units_per_call / median:7.3f} {unit}s/s  (rounds: {rounds} ms)"
        )
    if "reference" in timings:
        for name, (median, _) in timings.items():
            if name != "reference":
                ratio = timings["reference"][0] / median
                print(
                    f"  ratio {_LABELS.get(name, name):<18} {ratio:.2f}x the original's rate "
                    "(above 1: faster)"
                )
    for note in notes:
        print(f"  {note}")
    print(IDLE_REMINDER)
