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


# Lines of the worker protocol on a worker's stdout (anything else there is ignored).
_WORKER_PREFIX = "@bench "


def serve(run, warmup, describe):
    """The worker side of `time_in_processes`: times `run` as the parent asks.

    Runs `warmup` untimed calls, sends `describe()` (what the report needs
    besides times), then for each line "N" on stdin times N calls and sends
    the seconds per call, until stdin closes.

    Args:
        run: callable, one iteration that returns when its work is done.
        warmup: int. Untimed calls first.
        describe: callable returning a JSON-able dict, called once warm.
    """
    for _ in range(warmup):
        run()
    print(_WORKER_PREFIX + json.dumps(describe()), flush=True)
    for line in sys.stdin:
        calls = int(line)
        start = time.perf_counter()
        for _ in range(calls):
            run()
        print(_WORKER_PREFIX + json.dumps((time.perf_counter() - start) / calls), flush=True)


def runs_in_processes(names, isolate):
    """Whether runners `names` are timed in worker processes (`time_in_processes`).

    When `isolate` asks for it, and always for the original beside ours on
    another backend than TensorFlow: it needs TensorFlow.
    """
    return len(names) > 1 and (isolate or not uses_tensorflow())


class _Worker:
    """One runner in a process of its own: this script again with `--worker=NAME`."""

    def __init__(self, name, extra_args, env):
        argv = [a for a in sys.argv[1:] if not a.startswith(("--worker", "--json"))]
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(sys.argv[0]), *argv, *extra_args, f"--worker={name}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def receive(self):
        for line in self.process.stdout:
            if line.startswith(_WORKER_PREFIX):
                return json.loads(line[len(_WORKER_PREFIX) :])
        code = self.process.wait()
        raise RuntimeError(f"the {self.name} worker exited ({code}) before answering; see above.")

    def time(self, calls):
        self.process.stdin.write(f"{calls}\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self):
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait()


def time_in_processes(names, repeats, iterations, extra_args=()):
    """`time_alternating`'s figures, each runner in a worker process of its own.

    Runners sharing a process share its thread pools, allocator and kernel
    caches: the original's TF1 session measured 10-20% slower beside our
    model than alone on the same idle machine. Each worker is this script
    with the same flags plus `--worker=NAME`, which calls `serve`; workers
    start one after another (each warm before the next starts) and are
    timed in alternating rounds, the idle ones blocked on their input.

    Args:
        names: the runners, in order.
        repeats, iterations: as `time_alternating`.
        extra_args: more flags for every worker.

    Returns:
        (timings as `time_alternating` returns them, {name: its worker's `describe()`}).
    """
    workers, ready = {}, {}
    try:
        for name in names:
            # The original (runner "reference") runs on TensorFlow whatever ours runs on.
            env = dict(os.environ, KERAS_BACKEND="tensorflow") if name == "reference" else None
            workers[name] = _Worker(name, extra_args, env)
            ready[name] = workers[name].receive()
        rounds = {name: [] for name in names}
        for _ in range(repeats):
            for name, worker in workers.items():
                rounds[name].append(worker.time(iterations))
    finally:
        for worker in workers.values():
            worker.close()
    return {name: (statistics.median(t), t) for name, t in rounds.items()}, ready


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
