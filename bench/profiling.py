"""`--profile` of the benchmarks: where a step's time goes, by op type (self time).

The backend's profiler traces a few calls into an XSpace (`.xplane.pb`), the
format TensorBoard's profile plugin reads; this module reads it directly. On
TensorFlow each executed kernel is an event named `<node>:<op type>` on a
`tf_Compute` thread line; on JAX each XLA operation is an event named after
its HLO instruction (`convolution.12`, `fusion.3`, `dot.7`) on the CPU or GPU
plane. Kernels do not nest, so an event's duration is its self time. Op types
are summed over threads, so on several cores the shares are of busy time.
The table ends with the process's user and system CPU time and its page
faults over as many untraced calls: time the OS spends faulting in freshly
mapped memory is spent inside the kernels, where the op table cannot tell it
apart from arithmetic.
"""

import collections
import glob
import os
import re
import resource
import tempfile

# What the op types mean in a training step, for the summary lines.
_CATEGORIES = (
    ("convolution, weight gradients", re.compile(r"Conv2DBackpropFilter")),
    ("convolution, input gradients", re.compile(r"Conv2DBackpropInput")),
    # XLA on the CPU hands convolutions to its YNNPACK library ("ynn_fusion").
    ("convolution", re.compile(r"Conv2D|DepthwiseConv|^convolution|^ynn")),
    ("matrix products", re.compile(r"MatMul|Einsum|^dot")),
    ("batch norm", re.compile(r"FusedBatchNorm")),
    ("optimizer", re.compile(r"ResourceApply|ApplyMomentum")),
)
# Spans around kernels, not kernels: C++ scopes ("::"), Python frames ("$"), the
# ends of regions, allocations.
_IGNORED = re.compile(r"::|^\$|^end: |^(Memory|_Recv|_Send)")
_TF_KERNEL = re.compile(r"^[^:]+:([A-Za-z_]\w*)$")  # "<node>:<op type>"


def _trace(run, calls, directory):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        with jax.profiler.trace(directory):
            for _ in range(calls):
                run()
        return
    import tensorflow as tf

    tf.profiler.experimental.start(directory)
    try:
        for _ in range(calls):
            run()
    finally:
        tf.profiler.experimental.stop()


def _events(directory):
    """(plane, line, event name, duration in ps) of every event of the newest trace."""
    paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    path = max(paths, key=os.path.getmtime)
    import keras

    if keras.backend.backend() == "jax":  # jax reads its traces without TensorFlow.
        from jax.profiler import ProfileData

        for plane in ProfileData.from_file(path).planes:
            for line in plane.lines:
                for event in line.events:
                    yield plane.name, line.name, event.name, round(event.duration_ns * 1000)
        return
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                yield plane.name, line.name, name, event.duration_ps


def _is_kernel_line(plane, line):
    if plane.startswith("/device:"):
        return "XLA Ops" in line
    # TensorFlow's kernels run on `tf_Compute` threads, XLA's CPU thunks on `tf_XLA…` ones.
    return plane.startswith("/host:CPU") and line.startswith("tf_")


def op_self_times(events):
    """{op type: [total picoseconds, events]} of the kernels among `events`."""
    totals = collections.defaultdict(lambda: [0, 0])
    for plane, line, name, duration in events:
        if not _is_kernel_line(plane, line) or _IGNORED.search(name):
            continue
        # TensorFlow: "<node>:<op type>"; XLA: "fusion.12" -> "fusion".
        kernel = _TF_KERNEL.match(name)
        op = kernel.group(1) if kernel else re.sub(r"[.\d]+$", "", name)
        totals[op][0] += duration
        totals[op][1] += 1
    return dict(totals)


def profile_table(run, calls, top=15):
    """Runs `calls` calls of `run`, traces as many more; returns the op-type table as text lines."""
    # CPU time and page faults untraced: the profiler allocates too.
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as directory:
        _trace(run, calls, directory)
        times = op_self_times(_events(directory))
    total = sum(t for t, _ in times.values()) or 1
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    lines = [
        f"profile: self time per call by op type, {calls} calls ({total / calls / 1e9:.1f} ms)"
    ]
    for op, (ps, count) in sorted(times.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(
            f"  {op:<40} {ps / calls / 1e9:9.2f} ms {ps / total:6.1%}  {count / calls:7.0f} ops"
        )
    shares = collections.Counter()
    for op, (ps, _) in times.items():
        category = next((name for name, pattern in _CATEGORIES if pattern.search(op)), "other")
        shares[category] += ps
    lines.append(
        "  by kind: " + ", ".join(f"{name} {ps / total:.0%}" for name, ps in shares.most_common())
    )
    lines.append(
        f"  process: {user / calls:.2f} s user and {system / calls:.2f} s system CPU time "
        f"({system / ((user + system) or 1):.0%}), "
        f"{(after.ru_minflt - before.ru_minflt) / calls:,.0f} page faults per call"
    )
    return lines
