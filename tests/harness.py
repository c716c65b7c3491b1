"""Round trips every layer and model must survive: config, Keras serialisation, weights files."""

import os

import keras
import numpy as np


def _outputs(layer, inputs, call_kwargs):
    return np.asarray(layer(inputs, **(call_kwargs or {})))


def assert_config_round_trip(layer, inputs, call_kwargs=None):
    """`from_config(get_config())`, given the same weights, gives the same config and outputs.

    Also checks that Keras serialisation finds the class under its registered
    name.

    Args:
        layer: a built `keras.Layer` or `keras.Model`.
        inputs: array. What `layer` is called on.
        call_kwargs: dict. Call arguments, e.g. `{"training": False}`.
            Defaults to none.

    Returns:
        The clone.
    """
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone(inputs, **(call_kwargs or {}))  # Builds it.
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    np.testing.assert_array_equal(
        _outputs(clone, inputs, call_kwargs), _outputs(layer, inputs, call_kwargs)
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    return clone


def assert_saving_round_trip(model, inputs, directory, call_kwargs=None):
    """A `.weights.h5` file loaded into a model from the config, and a `.keras` file loaded
    whole, give the same outputs.

    Args:
        model: a built `keras.Model`.
        inputs: array. What `model` is called on.
        directory: path. Where the files are written.
        call_kwargs: dict. Call arguments, e.g. `{"training": False}`.
            Defaults to none.

    Returns:
        The model loaded from the `.keras` file.
    """
    expected = _outputs(model, inputs, call_kwargs)
    weights = os.path.join(directory, "model.weights.h5")
    model.save_weights(weights)
    fresh = type(model).from_config(model.get_config())
    fresh(inputs, **(call_kwargs or {}))  # Builds it.
    fresh.load_weights(weights)
    np.testing.assert_array_equal(_outputs(fresh, inputs, call_kwargs), expected)
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(_outputs(loaded, inputs, call_kwargs), expected)
    return loaded
