"""The JAX engine's training step against the TensorFlow engine's, from the same weights and batch.

The JAX side runs in a subprocess on the JAX backend with `import tensorflow`
blocked (the step, the model and the loss need no TensorFlow), data parallel
over two CPU devices: its update, and BatchNorm's statistics, are those of the
global batch, as the TensorFlow step's on one device.

One step is compared (a second would add the chaotic sensitivity of
training-mode BatchNorm to a 4-image batch: 1e-5 on the inputs moves the
second update by ~1%). Tolerances are measured as
tests/training/test_training_equivalence.py measures them against the original: the
TensorFlow step is run again on images moved by
N(0, 1e-5) (0..255 scale), and per kind of variable the JAX step's updates
must stay within `K` times that noise floor plus two float32 units in the
last place of the variable. An update is compared by the relative L2 norm of
the difference, `|(jax - initial) - (tf - initial)| / |tf - initial|`.

Each comparison runs with the original's loss and with class weights and the
hardest half of the pixels (`LOSS_OPTIONS`).
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize_weights
from jax_training import MOMENTUM_PREFIX, STEP_KEY, run_jax_steps

from tf_pacseg.training import TrainConfig, TrainStep, build_optimizer, build_training_model
from tf_pacseg.training.components import objective_arguments
from tf_pacseg.weights.saving import save_model_weights

# One worker: each loss setting's `runs` (a JAX process and two TF steps) serves two tests.
pytestmark = pytest.mark.xdist_group("training_engines")

CONFIG = dict(
    base_architecture="resnet_v1_50",
    units_per_block=(1, 1, 1, 1),
    num_classes=5,
    initial_learning_rate=0.01,
    max_iter=10,
    pre_trained_model="",
)
BATCH, SIZE, STEPS = 4, 33, 1
PERTURBATION = 1e-5
K = 4.0
KINDS = ("kernel", "momentum", "moving_mean", "moving_variance", "other")
# The loss settings each comparison runs with: the original's, and both options.
LOSS_OPTIONS = {
    "original": {},
    "class_weights_top_k": dict(class_weights=(0.5, 2.0, 1.0, 0.0, 3.0), top_k_percent_pixels=0.5),
}


def _kind(name):
    if name.startswith(MOMENTUM_PREFIX):
        return "momentum"
    leaf = name.rsplit("/", 1)[-1]
    return leaf if leaf in KINDS else "other"


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    # Blocky labels, so that the boundary-aware weights vary.
    coarse = rng.integers(0, CONFIG["num_classes"], (BATCH, 5, 5))
    labels = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :SIZE, :SIZE, None]
    labels = labels.astype(np.int32)
    labels[0, :6] = 255
    return images, labels


def _tf_steps(config, model_weights, images, labels):
    """The TensorFlow engine's STEPS steps: (losses, {variable path: value}) ."""
    config = TrainConfig(**config)
    model = build_training_model(config)
    model.set_weights(model_weights)
    model.get_layer("network.dropout").rate = 0.0
    optimizer = build_optimizer(config)
    step = TrainStep(model, optimizer, tf.distribute.get_strategy(), **objective_arguments(config))
    losses = [float(step(tf.constant(images), tf.constant(labels))["loss"]) for _ in range(STEPS)]
    values = {v.path: v.numpy() for v in model.weights}
    for variable, slot in zip(step.variables, optimizer.accumulators, strict=True):
        values[MOMENTUM_PREFIX + variable.path] = slot.numpy()
    return losses, values


def _update_differences(ours, reference, initial):
    differences = {}
    for name, theirs in reference.items():
        if theirs.dtype.kind != "f":
            continue  # Dropout's seed: each backend draws its own.
        start = initial.get(name, 0.0)
        update = np.asarray(theirs, np.float64) - start
        difference = np.linalg.norm(np.asarray(ours[name], np.float64) - start - update)
        norm = np.linalg.norm(update)
        differences[name] = difference / norm if norm else difference
    return differences


def _resolution(reference, initial):
    """Two float32 ulps of each variable, relative to its update."""
    resolved = {}
    for name, after in reference.items():
        if after.dtype.kind == "f":
            update = np.linalg.norm(np.asarray(after, np.float64) - initial.get(name, 0.0))
            ulps = 2 * np.linalg.norm(np.spacing(np.abs(after).astype(np.float32)))
            resolved[name] = ulps / update if update else 0.0
    return resolved


@pytest.fixture(scope="module", params=sorted(LOSS_OPTIONS))
def runs(request, tmp_path_factory):
    """Both engines' steps from one random initialisation, and the TF noise floor."""
    config = {**CONFIG, **LOSS_OPTIONS[request.param]}
    root = tmp_path_factory.mktemp("engines")
    model = build_training_model(TrainConfig(**CONFIG))
    randomize_weights(model, seed=1, residual_scale=0.3)
    weights_path = str(root / "model.weights.h5")
    save_model_weights(model, weights_path)
    initial = {v.path: v.numpy() for v in model.weights}
    images, labels = _batch()
    info, snapshots = run_jax_steps(weights_path, config, images, labels, STEPS, root, devices=2)
    jax_values = {k: v for k, v in snapshots[-1].items() if k != STEP_KEY}

    start = model.get_weights()
    tf_losses, tf_values = _tf_steps(config, start, images, labels)
    noise = np.random.default_rng(2).normal(0.0, PERTURBATION, images.shape)
    noisy_losses, noisy_values = _tf_steps(config, start, images + noise.astype(np.float32), labels)
    return dict(
        info=info,
        initial=initial,
        jax=(info["losses"], jax_values),
        tf=(tf_losses, tf_values),
        noisy=(noisy_losses, noisy_values),
    )


def test_the_jax_step_runs_without_tensorflow_on_two_devices(runs):
    info = runs["info"]
    assert info["backend"] == "jax" and info["devices"] == 2
    assert info["tensorflow_imported"] is False
    assert all(np.isfinite(info["losses"])) and len(info["losses"]) == STEPS


def test_jax_and_tensorflow_steps_agree_within_the_noise_floor(runs):
    initial = runs["initial"]
    (tf_losses, reference), (jax_losses, ours) = runs["tf"], runs["jax"]
    noisy_losses, noisy = runs["noisy"]
    assert set(ours) == set(reference)
    floor = dict.fromkeys(KINDS, 0.0)
    for name, difference in _update_differences(noisy, reference, initial).items():
        floor[_kind(name)] = max(floor[_kind(name)], difference)
    eps = _resolution(reference, initial)
    differences = _update_differences(ours, reference, initial)
    # Every kind of variable moved (fine_tune_batch_norm: beta/gamma do not train).
    assert {_kind(n) for n, v in reference.items() if not np.array_equal(v, initial.get(n, 0))} >= {
        "kernel",
        "momentum",
        "moving_mean",
        "moving_variance",
    }
    largest = dict.fromkeys(KINDS, 0.0)
    for name, difference in differences.items():
        largest[_kind(name)] = max(largest[_kind(name)], difference)
    print({kind: f"floor {floor[kind]:.1e} jax {largest[kind]:.1e}" for kind in KINDS})
    print("losses", tf_losses, noisy_losses, jax_losses)
    failures = [
        f"{name}: {difference:.2e} > {K:g} x {floor[_kind(name)]:.2e} + {eps[name]:.1e}"
        for name, difference in sorted(differences.items())
        if difference > K * floor[_kind(name)] + eps[name]
    ]
    for i, (jax_loss, tf_loss, noisy_loss) in enumerate(
        zip(jax_losses, tf_losses, noisy_losses, strict=True)
    ):
        if abs(jax_loss - tf_loss) > K * abs(noisy_loss - tf_loss) + 1e-6 * abs(tf_loss):
            failures.append(f"loss of step {i + 1}: {jax_loss} vs {tf_loss}")
    assert not failures, "\n".join(failures)
