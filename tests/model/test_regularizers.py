"""The weight decay: TF1-slim's l2_regularizer, on TensorFlow's L2Loss kernel or keras.ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg.model.regularizers import WeightDecay


def _value_and_gradient(regularizer, kernel):
    variable = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        value = regularizer(variable)
    return float(value), tape.gradient(value, variable).numpy()


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_weight_decay_is_slims_l2_regularizer(backend, monkeypatch):
    """weight_decay * sum(w**2) / 2, gradient weight_decay * w, on either path."""
    # keras.ops runs on TensorFlow tensors whatever the name says: this takes
    # the other backend's path here.
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype("float32")
    value, gradient = _value_and_gradient(WeightDecay(1e-3), kernel)
    np.testing.assert_allclose(value, 1e-3 * np.sum(kernel.astype("float64") ** 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(gradient, 1e-3 * kernel, rtol=1e-6)


def test_weight_decay_runs_the_l2loss_kernel_on_tensorflow():
    """One L2Loss op per kernel and no Square: the original's graph."""
    variable = tf.Variable(tf.ones((3, 3, 4, 5)))
    graph = tf.function(lambda: WeightDecay(1e-4)(variable)).get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert "L2Loss" in op_types
    assert "Square" not in op_types


def test_weight_decay_round_trips_its_config_and_rejects_a_negative_factor():
    clone = keras.regularizers.deserialize(keras.regularizers.serialize(WeightDecay(2e-4)))
    assert isinstance(clone, WeightDecay) and clone.weight_decay == 2e-4
    with pytest.raises(ValueError, match="weight_decay"):
        WeightDecay(-1.0)
