"""The model on the JAX backend: TF-saved weights give the same logits."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO, randomize_weights

from tf_pacseg import build_model
from tf_pacseg.weights.saving import save_model_weights

# Runs under KERAS_BACKEND=jax; imports only the model module (no tf_pacseg.weights.saving,
# which reads TF1 checkpoints and so imports TensorFlow).
JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from tf_pacseg.model.initial_values import without_initial_values
    from tf_pacseg.model.segmenter import build_model

    weights, images, output = sys.argv[1:]
    with open(weights[: -len(".weights.h5")] + ".json", encoding="utf-8") as f:
        with without_initial_values():
            model = build_model(**json.load(f)["architecture"])
    model.load_weights(weights)
    logits = model(np.load(images), training=False)
    np.save(output, np.asarray(logits))
    print(json.dumps({
        "backend": keras.backend.backend(),
        "dtype": keras.backend.standardize_dtype(logits.dtype),
        "array_module": type(logits).__module__,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }))
    """
)


@pytest.mark.slow
def test_jax_backend_reproduces_tensorflow_logits_from_saved_weights(tmp_path):
    # PAC carries the custom layers (PyramidAtrousConv, BatchNorm, ResizeLike).
    model = build_model("resnet_v1_50", "pac", num_classes=9, units_per_block=(1, 1, 1, 1))
    randomize_weights(model, seed=4)
    weights = os.fspath(tmp_path / "model.weights.h5")
    save_model_weights(model, weights)
    images = np.random.default_rng(5).uniform(0.0, 255.0, (2, 21, 30, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    expected = np.asarray(model(images, training=False))

    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    output = tmp_path / "jax_logits.npy"
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, weights, os.fspath(tmp_path / "images.npy"), output],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["backend"] == "jax" and info["array_module"].startswith("jax")
    assert info["dtype"] == "float32"
    # The model path is keras.ops only: building, loading and running it never
    # imports TensorFlow.
    assert info["tensorflow_imported"] is False

    logits = np.load(output)
    assert logits.shape == expected.shape == (2, 21, 30, 9)
    spread = float(expected.max() - expected.min())
    assert spread > 1.0
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * spread)
