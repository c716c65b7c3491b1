"""What the benchmark scripts share: import paths, the machine, alternating timing, the report."""

import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE_REMINDER = (
    "Timings are only meaningful on an otherwise idle machine: stop other jobs, "
    "and compare figures taken in the same run."
)


def setup_paths():
    """Puts the repository (tf_pacseg) and tests/ (the TF1 reference) on the import path."""
    for path in (os.path.join(REPOSITORY, "tests"), REPOSITORY):
        if path not in sys.path:
            sys.path.insert(0, path)


def quiet_python_logs():
    """Hides TensorFlow's and JAX's Python-side notices (strategies, deprecations, TPU probe)."""
    for name in ("tensorflow", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def time_reference_in_subprocess(script):
    """The original's timing from `script --only=reference --json`, run on TensorFlow.

    For ours on another Keras backend: the same flags, in a subprocess with
    `KERAS_BACKEND=tensorflow`, after ours (not alternated).
    """
    argv = [a for a in sys.argv[1:] if not a.startswith(("--only", "--json"))]
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


def report(title, timings, unit, units_per_call):
    """Prints the machine, both medians with their rounds, and how many times faster ours is.

    Args:
        title: str. The configuration.
        timings: dict from `time_alternating`, keys "ours" and/or "reference".
        unit: str. What one call processes, e.g. "image" or "step".
        units_per_call: int. The batch size for images, 1 for steps.
    """
    print(title)
    print(f"machine: {machine_description()}")
    for name, label in (("ours", "ours"), ("reference", "original TF1 graph")):
        if name in timings:
            median, times = timings[name]
            rounds = ", ".join(f"{t * 1000:.0f}" for t in times)
            print(
                f"  {label:<18} {median * 1000:8.1f} ms/{unit}  "
                f"{units_per_call / median:7.3f} {unit}s/s  (rounds: {rounds} ms)"
            )
    if "ours" in timings and "reference" in timings:
        ratio = timings["reference"][0] / timings["ours"][0]
        print(f"  ratio              {ratio:.2f}x the original's rate (above 1: ours is faster)")
    print(IDLE_REMINDER)
