"""Runs the JAX engine's training step in a subprocess, with `import tensorflow` blocked.

The tests compare it with the TensorFlow engine (test_training_engines.py)
and the original (test_training_equivalence.py) from the same weights and
batch; the subprocess also shows that the step, the model and the loss need
no TensorFlow.
"""

import json
import textwrap

import numpy as np
from helpers import run_python

MOMENTUM_PREFIX = "momentum/"
STEP_KEY = "global_step"

SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    weights, config, batch, output, devices = sys.argv[1:]
    # XLA's default optimisations, as users run the step (not the session's
    # unoptimised compilation, conftest.py): what is compared is its rounding.
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "tensorflow":
                raise ImportError("TensorFlow is blocked in this test")

    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    import numpy as np
    from tf_pacseg.model.initial_values import without_initial_values
    from tf_pacseg.training import TrainConfig, build_optimizer, build_training_model
    from tf_pacseg.training import components, jax_step

    config = TrainConfig(**json.loads(config))
    with without_initial_values():  # All loaded below.
        model = build_training_model(config)  # BatchNorm's training mode is the config's.
    # The references have no dropout: a rate of 0 makes Keras' Dropout the identity.
    model.get_layer("network.dropout").rate = 0.0
    optimizer = build_optimizer(config)
    step = jax_step.JaxTrainStep(model, optimizer, **components.objective_arguments(config))
    # Loaded after the step exists, as train.py loads pre-trained weights.
    model.load_weights(weights)
    arrays = np.load(batch)
    (images, labels), = jax_step.prefetch_to_devices(
        [(arrays["images"], arrays["labels"])], step.mesh
    )
    losses, values = [], {}
    for index in range(int(arrays["steps"])):
        losses.append(float(step(images, labels)["loss"]))
        step.sync_to_model()
        for variable in model.weights:
            values[f"{index}/{variable.path}"] = np.asarray(variable.value)
        for variable, slot in zip(step.variables, optimizer.accumulators, strict=True):
            values[f"{index}/momentum/{variable.path}"] = np.asarray(slot.value)
        values[f"{index}/global_step"] = np.asarray(optimizer.iterations.value)
    np.savez(output, **values)
    print(json.dumps({
        "losses": losses,
        "backend": keras.backend.backend(),
        "devices": step.mesh.size,
        "tensorflow_imported": any(m.partition(".")[0] == "tensorflow" for m in sys.modules),
    }))
    """
)


def run_jax_steps(weights_path, config, images, labels, steps, work_dir, devices=1):
    """`steps` JAX training steps from `weights_path` on one batch.

    Args:
        weights_path: str. A `.weights.h5` of the model of `config`.
        config: dict of `TrainConfig` fields (model, optimizer, loss).
        images: float32 [N, H, W, 3]; labels: int32 [N, H, W, 1].
        steps: int.
        work_dir: pathlib.Path for the exchanged files.
        devices: int. CPU devices the batch is split over. Defaults to 1.

    Returns:
        (info, snapshots): info has `losses`, `backend`, `devices` and
        `tensorflow_imported`; snapshots has, per step, {variable path: value
        after it}, momentum as `momentum/<path>` and the step as `global_step`.
    """
    batch, output = work_dir / "jax_batch.npz", work_dir / "jax_steps.npz"
    np.savez(batch, images=images, labels=labels, steps=steps)
    process = run_python(
        SCRIPT,
        [weights_path, json.dumps(config), batch, output, devices],
        backend="jax",
        timeout=600,
    )
    info = json.loads(process.stdout.strip().splitlines()[-1])
    snapshots = [{} for _ in range(steps)]
    with np.load(output) as arrays:
        for key in arrays.files:
            index, name = key.split("/", 1)
            snapshots[int(index)][name] = arrays[key]
    return info, snapshots
