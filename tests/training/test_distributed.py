"""Data parallelism: two replicas make one replica's update (test_multi_process.py: two
processes train as one).

Logical CPU devices must be configured before TensorFlow starts, so the
replica comparison runs this file as a script in a fresh process.
"""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, TESTS

# Run as a script, this file imports the helpers beside conftest.py.
_SELF_RUN_ENV = dict(
    os.environ, PYTHONPATH=os.pathsep.join([os.fspath(TESTS), os.environ.get("PYTHONPATH", "")])
)


def _sync_batch_norm_model(num_classes):
    """A small conv net with synchronised BatchNorm, standing in for the segmenter.

    Tracing the real network's ~25 synchronised BatchNorms over two replicas
    takes minutes on 2 CPU cores; two suffice to pin the gradient path.
    """
    import keras

    regularizer = keras.regularizers.L2(5e-5)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(2.0 / 255.0, offset=-1.0)(inputs)
    for _ in range(2):
        x = keras.layers.Conv2D(
            8, 3, padding="same", use_bias=False, kernel_regularizer=regularizer
        )(x)
        x = keras.layers.BatchNormalization(synchronized=True)(x)
        x = keras.layers.ReLU()(x)
    logits = keras.layers.Conv2D(num_classes, 1, kernel_regularizer=regularizer)(x)
    model = keras.Model(inputs, logits)
    # What TrainStep reads of a PACSegmenter.
    model.num_classes, model.fine_tune_batch_norm, model.sync_batch_norm = num_classes, True, True
    return model


def _compare_one_and_two_replicas(case):
    """Runs 2 steps on one global batch with 1 and 2 replicas; returns the differences.

    Args:
        case: "frozen_batch_norm" (the tiny segmenter, fine_tune_batch_norm=False,
            float32) or "sync_batch_norm" (`_sync_batch_norm_model`, float64:
            Keras' synchronised variance E[x²] - E[x]² is ill-conditioned
            enough in float32 that summation order alone moves updates ~1%).
    """
    import numpy as np

    from tf_pacseg.training import distribute

    distribute.configure_logical_cpus(2)
    import keras
    import tensorflow as tf

    from tf_pacseg import training

    one = distribute.create_strategy(devices=["/cpu:0"])
    two = distribute.create_strategy(devices=["/cpu:0", "/cpu:1"])
    config = training.TrainConfig(
        base_architecture="resnet_v1_50",
        units_per_block=(1, 1, 1, 1),
        num_classes=5,
        fine_tune_batch_norm=False,
        initial_learning_rate=0.01,
        max_iter=10,
    )
    keras.config.set_dtype_policy("float64" if case == "sync_batch_norm" else "float32")
    keras.utils.set_random_seed(0)
    runs = {}
    for name, strategy in (("one", one), ("two", two)):
        with strategy.scope():
            if case == "sync_batch_norm":
                model = _sync_batch_norm_model(config.num_classes)
            else:
                model = training.build_training_model(config)
                # Dropout draws differ per replica; it is not what is compared.
                model.get_layer("network.dropout").rate = 0.0
            optimizer = training.build_optimizer(config)
        runs[name] = (strategy, model, optimizer)
    runs["two"][1].set_weights(runs["one"][1].get_weights())

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 33, 33, 3)).astype(np.float32)
    labels = rng.integers(0, 5, (4, 33, 33, 1)).astype(np.int32)
    # Unequal weighted-pixel counts per replica: per-replica means would differ.
    labels[0, :20] = 255
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    initial = [w.numpy() for w in runs["one"][1].weights]
    losses = {}
    for name, (strategy, model, optimizer) in runs.items():
        step = training.TrainStep(model, optimizer, strategy)
        batches = iter(strategy.experimental_distribute_dataset(dataset))
        losses[name] = [float(step(*next(batches))["loss"]) for _ in range(2)]

    weights_error = updates_error = 0.0
    pairs = zip(initial, runs["one"][1].weights, runs["two"][1].weights, strict=True)
    for start, ours, theirs in pairs:
        ours, theirs = ours.numpy(), theirs.numpy()
        scale = max(np.abs(ours).max(), 1e-12)
        weights_error = max(weights_error, float(np.abs(ours - theirs).max() / scale))
        update = ours - start
        if np.abs(update).max() > 0:
            difference = np.abs(update - (theirs - start)).max() / np.abs(update).max()
            updates_error = max(updates_error, float(difference))
    return {"weights": weights_error, "updates": updates_error, "losses": losses}


def _overflow_on_one_replica():
    """`agree_on_overflow` with an inf on the second of two replicas only."""
    from tf_pacseg.training import distribute

    distribute.configure_logical_cpus(2)
    import tensorflow as tf

    from tf_pacseg import training

    strategy = distribute.create_strategy(devices=["/cpu:0", "/cpu:1"])

    def replica_fn():
        context = tf.distribute.get_replica_context()
        second = tf.cast(context.replica_id_in_sync_group, tf.float32)
        gradients = [tf.ones([3]), tf.fill([2], 1.0 / (1.0 - second)), None]  # inf on replica 1.
        agreed = training.agree_on_overflow(gradients, context)
        return tf.reduce_all(tf.math.is_finite(agreed[0])), tf.reduce_all(
            tf.math.is_finite(agreed[1])
        )

    outputs = tf.function(lambda: strategy.run(replica_fn))()
    return {"finite": [bool(v) for x in outputs for v in strategy.experimental_local_results(x)]}


def test_an_overflow_on_one_replica_reaches_every_replica():
    command = [sys.executable, __file__, "overflow"]
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=REPO, env=_SELF_RUN_ENV
    )
    assert process.returncode == 0, process.stderr[-5000:]
    assert json.loads(process.stdout.strip().splitlines()[-1]) == {"finite": [False] * 4}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["frozen_batch_norm", "sync_batch_norm"])
def test_two_replicas_make_the_update_of_one_replica(case):
    command = [sys.executable, __file__, case]
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=REPO, env=_SELF_RUN_ENV
    )
    assert process.returncode == 0, process.stderr[-5000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    one, two = result["losses"]["one"], result["losses"]["two"]
    assert two == pytest.approx(one, rel=1e-5)
    assert result["weights"] < 1e-5
    # The updates themselves (not just weights dominated by their start values).
    assert result["updates"] < 1e-3


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.argv[1] == "overflow":
        outcome = _overflow_on_one_replica()
    else:
        outcome = _compare_one_and_two_replicas(sys.argv[1])
    print(json.dumps(outcome))
