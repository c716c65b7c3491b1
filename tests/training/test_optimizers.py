import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg.training.optimizers import PolyDecay, TF1Momentum

v1 = tf.compat.v1


def _cube(weights):
    return tf.reduce_sum(weights**3)


def _tf1_momentum_trajectory(initial, steps, lr0, max_iter, power, momentum, loss=_cube):
    """Runs TF1's MomentumOptimizer on `loss` (sum(w**3)) with polynomial_decay."""
    graph = tf.Graph()
    with graph.as_default():
        weights = v1.get_variable("w", initializer=initial)
        global_step = v1.train.get_or_create_global_step()
        learning_rate = v1.train.polynomial_decay(lr0, global_step, max_iter, 0.0, power=power)
        train_op = v1.train.MomentumOptimizer(learning_rate, momentum).minimize(
            loss(weights), global_step=global_step
        )
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(steps):
                sess.run(train_op)
            return sess.run(weights)


def _trajectory(optimizer, initial, steps, loss=_cube):
    variable = keras.Variable(initial)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            value = loss(variable.value)
        optimizer.apply_gradients([(tape.gradient(value, variable.value), variable)])
    return np.asarray(variable)


@pytest.mark.parametrize("fused", [True, False])
def test_tf1_momentum_on_poly_schedule_matches_tf1_optimizer(fused):
    initial = np.array([1.0, -2.0, 0.5], "float32")
    # More steps than max_iter: the rate reaches 0 and the momentum keeps moving.
    expected = _tf1_momentum_trajectory(initial, 8, 0.1, 5, 0.9, 0.9)
    optimizer = TF1Momentum(PolyDecay(0.1, max_iter=5, power=0.9), momentum=0.9, fused=fused)
    np.testing.assert_allclose(_trajectory(optimizer, initial, 8), expected, rtol=1e-5)


def test_fused_kernel_is_tf1_s_update_and_the_keras_ops_update_computes_the_same():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=1000).astype("float32")
    factors = rng.normal(size=1000).astype("float32")

    def loss(weights):  # Gradients the same bits in a graph and eagerly.
        return tf.reduce_sum(weights * tf.constant(factors))

    # A constant rate (power 0), so that both schedules give the same float.
    expected = _tf1_momentum_trajectory(initial, 6, 0.1, 5, 0.0, 0.9, loss)
    fused = _trajectory(TF1Momentum(0.1, 0.9, fused=True), initial, 6, loss)
    ops_path = _trajectory(TF1Momentum(0.1, 0.9, fused=False), initial, 6, loss)
    # The original's kernel: the same bits as TF1's optimizer.
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_allclose(ops_path, fused, rtol=1e-6, atol=1e-6)


def test_fused_update_under_mirrored_strategy_updates_every_replica():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variable = keras.Variable(np.array([1.0, 2.0], "float32"))
        optimizer = TF1Momentum(0.5, momentum=0.9)

    @tf.function
    def step():
        def replica_step():
            optimizer.apply([tf.constant([1.0, -1.0])], [variable])

        strategy.run(replica_step)

    step()
    step()
    # a = 1 then 1.9 (times the gradient's sign); w -= 0.5 a each step.
    np.testing.assert_allclose(np.asarray(variable.value), [1.0 - 1.45, 2.0 + 1.45], rtol=1e-6)


def test_keras_sgd_differs_from_tf1_momentum_under_a_changing_rate():
    # Pins why TF1Momentum exists: SGD folds the rate into the velocity.
    initial = np.array([1.0, -2.0], "float32")
    expected = _tf1_momentum_trajectory(initial, 4, 0.1, 5, 0.9, 0.9)
    variable = keras.Variable(initial)
    optimizer = keras.optimizers.SGD(PolyDecay(0.1, max_iter=5), momentum=0.9)
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(variable.value**3)
        optimizer.apply_gradients([(tape.gradient(loss, variable.value), variable)])
    assert not np.allclose(np.asarray(variable), expected, rtol=1e-4)


@pytest.mark.parametrize("step", [0, 1, 100, 29999, 30000, 45000])
def test_poly_decay_formula(step):
    schedule = PolyDecay(0.007, max_iter=30000, end_learning_rate=0.0001, power=0.9)
    expected = (0.007 - 0.0001) * (1 - min(step, 30000) / 30000) ** 0.9 + 0.0001
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


def test_poly_decay_counts_from_initial_step():
    schedule = PolyDecay(0.01, max_iter=100, initial_step=30000)
    np.testing.assert_allclose(float(schedule(30000)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(30050)), 0.01 * 0.5**0.9, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(10)), 0.01, rtol=1e-6)


def test_invalid_arguments_name_the_received_value():
    with pytest.raises(ValueError, match="Received: max_iter=0"):
        PolyDecay(max_iter=0)
    with pytest.raises(ValueError, match="Received: momentum=1.5"):
        TF1Momentum(momentum=1.5)


def test_optimizer_and_schedule_config_round_trip():
    optimizer = TF1Momentum(PolyDecay(0.02, max_iter=10, initial_step=3), momentum=0.8)
    restored = TF1Momentum.from_config(optimizer.get_config())
    assert restored.momentum == 0.8
    assert restored.fused is True
    assert TF1Momentum.from_config(TF1Momentum(fused=False).get_config()).fused is False
    assert float(restored.learning_rate) == pytest.approx(float(optimizer.learning_rate))
