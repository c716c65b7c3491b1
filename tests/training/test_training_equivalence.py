"""One training step of the TensorFlow engine against the original's, from one TF1 checkpoint.

The reference is tf_pacseg.testing.tf1_training's `tf.compat.v1` training graph
(fused BatchNorm and UPDATE_OPS, boundary-aware loss + slim L2, the original's
trained variables, TF1 momentum on the poly schedule; dropout off on both
sides). After one step every variable is compared (docs/design.md §1, §6):
weights, optimizer slots and moving statistics by the relative L2 norm of the
difference of their updates, `|(ours - initial) - (ref - initial)| /
|ref - initial|`, and the total loss of steps 1 and 2.

Training-mode BatchNorm amplifies float noise, so the tolerances are measured
here: the reference run again (a) on images moved by N(0, 1e-5) (0..255
scale) and (b) with its BatchNorm computed through separate ops (the same
arithmetic, another rounding). Ours must stay within `K` times the larger of
the two floors, per kind of variable, plus two float32 units in the last
place of the variable (what the variable can resolve: a head BatchNorm with
decay 0.9997 moves by a few of them per step).

Both engines are compared: `our_training_steps` (TensorFlow) and
`jax_training_steps` (JAX, in a subprocess: tests/jax_training.py) against the
same `reference`, `compare_updates` and `assert_within_noise_floor`.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_ARCHITECTURE
from jax_training import MOMENTUM_PREFIX, STEP_KEY, run_jax_steps

from tf_pacseg.data import synthetic
from tf_pacseg.testing import tf1_checkpoints, tf1_training
from tf_pacseg.training import TrainConfig, TrainStep, build_optimizer, build_training_model
from tf_pacseg.weights.saving import save_model_weights
from tf_pacseg.weights.tf1_checkpoint import load_tf1_checkpoint, tf1_variable_map

ARCHITECTURE = TINY_ARCHITECTURE
# A short schedule, so that the learning rate of step 2 differs from step 1's.
SCHEDULE = dict(max_iter=10)
BATCH, SIZE, STEPS = 8, 65, 2
PERTURBATION = 1e-5
K = 4.0
KINDS = ("weights", "Momentum", "beta_gamma", "moving_mean", "moving_variance")
# One worker: both engines are compared with one `references` run per BatchNorm setting.
pytestmark = pytest.mark.xdist_group("training_equivalence")


@dataclasses.dataclass
class StepResult:
    """What a training engine did: per-step losses and every variable by its TF1 name.

    Attributes:
        losses: list of floats, each step's total loss (before its update).
        initial: {TF1 name: array} before the first step.
        variables: list, per step, of {TF1 name: array} after it
            (optimizer slots as `<variable>/Momentum`).
    """

    losses: list
    initial: dict
    variables: list


def _kind(name):
    if name.endswith("/Momentum"):
        return "Momentum"
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("beta", "gamma"):
        return "beta_gamma"
    if leaf in ("moving_mean", "moving_variance"):
        return leaf
    return "weights"


def _synthetic_batch(seed):
    """Images (float32 0..255) and labels (int32 [N, H, W, 1]) of different content."""
    rng = np.random.default_rng(seed)
    samples = [synthetic.make_sample(rng, SIZE, SIZE) for _ in range(BATCH)]
    images = np.stack([image for image, _ in samples]).astype(np.float32)
    labels = np.stack([label for _, label in samples]).astype(np.int32)[..., None]
    return images, labels


def reference_step(checkpoint, images, labels, config, **graph_options):
    """The original's `STEPS` steps (tf_pacseg.testing.tf1_training) as a `StepResult`."""
    result = tf1_training.reference_training_steps(
        checkpoint,
        images,
        labels,
        steps=STEPS,
        **ARCHITECTURE,
        fine_tune_batch_norm=config.fine_tune_batch_norm,
        batch_norm_decay=config.batch_norm_decay,
        weight_decay=config.weight_decay,
        initial_learning_rate=config.initial_learning_rate,
        max_iter=config.max_iter,
        **graph_options,
    )
    return StepResult(result["losses"], result["initial"], result["variables"])


def our_training_steps(checkpoint, images, labels, config):
    """The TensorFlow engine's `TrainStep` (default strategy), dropout off, as a `StepResult`."""
    model = build_training_model(config)
    load_tf1_checkpoint(model, checkpoint)
    # The reference has no dropout: a rate of 0 makes Keras' Dropout the identity.
    model.get_layer("network.dropout").rate = 0.0
    optimizer = build_optimizer(config)
    step = TrainStep(model, optimizer, tf.distribute.get_strategy(), loss=config.loss)
    by_name = tf1_variable_map(model)
    tf1_names = {id(variable): name for name, variable in by_name.items()}
    for variable, slot in zip(step.variables, optimizer.accumulators, strict=True):
        by_name[tf1_names[id(variable)] + "/Momentum"] = slot
    by_name["global_step"] = optimizer.iterations

    def snapshot():
        return {name: variable.numpy() for name, variable in by_name.items()}

    result = StepResult([], snapshot(), [])
    for _ in range(STEPS):
        outputs = step(tf.constant(images), tf.constant(labels))
        result.losses.append(float(outputs["loss"]))
        result.variables.append(snapshot())
    return result


def jax_training_steps(checkpoint, images, labels, config, work_dir):
    """The JAX engine's `JaxTrainStep` from the same checkpoint, dropout off, as a `StepResult`."""
    model = build_training_model(config)
    load_tf1_checkpoint(model, checkpoint)
    weights_path = str(work_dir / "model.weights.h5")
    save_model_weights(model, weights_path)
    by_name = tf1_variable_map(model)
    names = {variable.path: name for name, variable in by_name.items()}
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    info, snapshots = run_jax_steps(weights_path, fields, images, labels, STEPS, work_dir)

    def by_tf1_name(snapshot):
        values = {STEP_KEY: snapshot[STEP_KEY]}
        for path, value in snapshot.items():
            if path.startswith(MOMENTUM_PREFIX):
                values[names[path[len(MOMENTUM_PREFIX) :]] + "/Momentum"] = value
            elif path in names:
                values[names[path]] = value
        return values

    initial = {name: variable.numpy() for name, variable in by_name.items()}
    return StepResult(info["losses"], initial, [by_tf1_name(s) for s in snapshots])


def compare_updates(result, reference, step=0):
    """{TF1 name: relative L2 norm of the update difference} after `step` (0-based).

    Optimizer slots start at zero. A variable the reference leaves unchanged
    gives the absolute norm of the other's update (0 when both leave it).
    """
    differences = {}
    for name, after in reference.variables[step].items():
        initial = reference.initial.get(name, 0.0)
        ours = np.asarray(result.variables[step][name], np.float64) - initial
        theirs = np.asarray(after, np.float64) - initial
        norm = np.linalg.norm(theirs)
        difference = np.linalg.norm(ours - theirs)
        differences[name] = difference / norm if norm else difference
    return differences


def resolution(reference, step=0):
    """{TF1 name: two float32 ulps of the variable, relative to its reference update}."""
    resolved = {}
    for name, after in reference.variables[step].items():
        update = np.linalg.norm(np.asarray(after, np.float64) - reference.initial.get(name, 0.0))
        ulps = 2 * np.linalg.norm(np.spacing(np.abs(after).astype(np.float32)))
        resolved[name] = ulps / update if update else 0.0
    return resolved


def noise_floor(reference, *noisy):
    """Per kind: the largest update difference of any noisy rerun of the reference."""
    floor = dict.fromkeys(KINDS, 0.0)
    for rerun in noisy:
        for name, difference in compare_updates(rerun, reference).items():
            floor[_kind(name)] = max(floor[_kind(name)], difference)
    return floor


def loss_floor(reference, *noisy):
    return [
        max(abs(rerun.losses[i] - reference.losses[i]) for rerun in noisy)
        for i in range(len(reference.losses))
    ]


def assert_within_noise_floor(result, reference, floor, losses_floor):
    """Every variable and loss within K x floor (+ resolution); the message lists the rest."""
    assert set(result.variables[0]) == set(reference.variables[0])
    eps = resolution(reference)
    failures = [
        f"{name}: {difference:.2e} > {K:g} x {floor[_kind(name)]:.2e} + {eps[name]:.1e}"
        for name, difference in sorted(compare_updates(result, reference).items())
        if difference > K * floor[_kind(name)] + eps[name]
    ]
    for i, (ours, theirs, noise) in enumerate(
        zip(result.losses, reference.losses, losses_floor, strict=True)
    ):
        if abs(ours - theirs) > K * noise + 1e-6 * abs(theirs):
            failures.append(f"loss of step {i + 1}: {ours} vs {theirs} (floor {noise:.1e})")
    assert not failures, "\n".join(failures)


def summary(result, reference, floor, losses_floor):
    """Lines of floor vs `result`'s largest difference per kind, and the losses (`pytest -s`)."""
    ours = dict.fromkeys(KINDS, 0.0)
    for name, difference in compare_updates(result, reference).items():
        ours[_kind(name)] = max(ours[_kind(name)], difference)
    lines = [f"{kind:16s} floor {floor[kind]:.1e}  ours {ours[kind]:.1e}" for kind in KINDS]
    for i, noise in enumerate(losses_floor):
        difference = abs(result.losses[i] - reference.losses[i])
        lines.append(f"loss of step {i + 1}  floor {noise:.1e}  ours {difference:.1e}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The reference network with random weights and BatchNorm statistics of real activations."""
    prefix = str(tmp_path_factory.mktemp("reference") / "model")
    tf1_checkpoints.write_reference_checkpoint(prefix, seed=0, **ARCHITECTURE)
    calibration_images, _ = _synthetic_batch(seed=2)
    tf1_training.calibrate_batch_norm(prefix, calibration_images, **ARCHITECTURE)
    return prefix


@pytest.fixture(scope="module")
def references(checkpoint):
    """Per `fine_tune_batch_norm`: the reference, its noise floors, and the batch."""
    cache = {}

    def get(fine_tune_batch_norm):
        if fine_tune_batch_norm not in cache:
            config = TrainConfig(
                **ARCHITECTURE, **SCHEDULE, fine_tune_batch_norm=fine_tune_batch_norm
            )
            images, labels = _synthetic_batch(seed=1)
            noise = np.random.default_rng(3).normal(0.0, PERTURBATION, images.shape)
            reference = reference_step(checkpoint, images, labels, config)
            noisy = (
                reference_step(checkpoint, images + noise.astype(np.float32), labels, config),
                reference_step(checkpoint, images, labels, config, fused_batch_norm=False),
            )
            cache[fine_tune_batch_norm] = dict(
                config=config,
                batch=(images, labels),
                reference=reference,
                floor=noise_floor(reference, *noisy),
                losses_floor=loss_floor(reference, *noisy),
            )
        return cache[fine_tune_batch_norm]

    return get


@pytest.mark.parametrize("engine", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fine_tune_batch_norm", [True, False])
def test_training_step_matches_the_original_within_its_noise_floor(
    checkpoint, references, fine_tune_batch_norm, engine, tmp_path
):
    run = references(fine_tune_batch_norm)
    config, (images, labels), reference = run["config"], run["batch"], run["reference"]
    floor, losses_floor = run["floor"], run["losses_floor"]

    if engine == "jax":
        ours = jax_training_steps(checkpoint, images, labels, config, tmp_path)
    else:
        ours = our_training_steps(checkpoint, images, labels, config)

    untouched = [
        name
        for name, value in reference.variables[0].items()
        if np.array_equal(value, reference.initial.get(name, 0.0))
    ]
    if fine_tune_batch_norm:
        # beta and gamma are not trained; everything else moved.
        assert sorted(untouched) == sorted(n for n in untouched if _kind(n) == "beta_gamma")
        assert untouched
    else:
        # BatchNorm in inference mode: its moving statistics stay.
        assert untouched and all(_kind(n).startswith("moving_") for n in untouched)
    print(summary(ours, reference, floor, losses_floor))
    assert_within_noise_floor(ours, reference, floor, losses_floor)
