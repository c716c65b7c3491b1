"""Shared test utilities: random non-trivial weights and backend subprocesses."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The reduced-depth network that the parity tests write reference checkpoints for.
TINY_ARCHITECTURE = dict(
    base_architecture="resnet_v1_50",
    head="pac",
    output_stride=16,
    num_classes=21,
    units_per_block=(1, 1, 1, 1),
)


def randomize_weights(model, seed=0, residual_scale=1.0):
    """He-normal kernels and non-trivial BatchNorm statistics, so outputs tell weights apart.

    `residual_scale` multiplies the kernels of the residual units' last conv
    (`conv3`), keeping activations moderate through deep backbones.
    """
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        path, shape = weight.path, tuple(weight.shape)
        if path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif path.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, math.sqrt(2.0 / np.prod(shape[:-1])), shape)
            if ".conv3" in path:
                value *= residual_scale
        values.append(value.astype("float32"))
    model.set_weights(values)
    return model


# Skips the interpreter's last garbage collections, as the entry points do
# (tf_pacseg.cli.run): 1.5 s of CPU per TensorFlow process.
_FREEZE_AT_EXIT = "import atexit, gc; atexit.register(gc.freeze)\n"


def run_python(script, args, backend, timeout=300):
    """Runs `python -c script args` on a fresh Keras `backend`, CPU only; asserts success."""
    # CPU only: skips probing for accelerators, and a GPU could compute in TF32.
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
    )
    # The checkout's package, and these helpers for scripts that import test modules.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _FREEZE_AT_EXIT + script, *map(str, args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def make_records(root, num_train=8, num_val=2):
    """A small synthetic VOC set converted to 2 shards per split; returns the records folder."""
    from tf_pacseg.data import conversion, synthetic

    voc_dir, records = os.path.join(root, "voc"), os.path.join(root, "records")
    synthetic.make_synthetic_voc(
        voc_dir, num_train=num_train, num_val=num_val, min_size=40, max_size=60
    )
    lists = os.path.join("ImageSets", "Segmentation")
    conversion.convert_voc(
        voc_dir,
        records,
        os.path.join(lists, "train.txt"),
        os.path.join(lists, "val.txt"),
        num_shards=2,
        num_workers=0,
        verbose=0,
    )
    return records
