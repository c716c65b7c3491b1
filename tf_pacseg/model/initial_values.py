"""Building a network whose weights are loaded next, without drawing initial values.

A loaded model (a `.weights.h5`, a TF1 checkpoint, a folded copy) overwrites
every weight, so the initial values drawn when the network is built are
wasted, and on JAX slowly: each weight shape compiles its own random
program (docs/design.md §9 has the figures).

Under `without_initial_values()` the project's layers (`WeightsMixin`)
create their weights as host zeros (all of them, or those of the layers it
names); outside it they use their initializers.
"""

import contextlib
import contextvars

import keras
import numpy as np

# The predicate on layer names of the innermost block, None outside any.
_SKIPPED = contextvars.ContextVar("tf_pacseg_skipped_layers", default=None)


def _every_layer(name):
    return True


@contextlib.contextmanager
def without_initial_values(layers=None):
    """Weights created in this block start as zeros, for the caller to assign.

    Args:
        layers: callable, layer name -> bool. Only the layers it accepts
            start from zeros; the others draw their initial values. `None`:
            every layer. Defaults to `None`.
    """
    token = _SKIPPED.set(layers or _every_layer)
    try:
        yield
    finally:
        _SKIPPED.reset(token)


class _HostZeros(keras.initializers.Initializer):
    """NumPy zeros: the variable takes them without running a program on the device."""

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, keras.backend.standardize_dtype(dtype))


class WeightsMixin:
    """For layers: `add_weight` ignores the initializer under `without_initial_values()`."""

    def add_weight(self, *args, initializer=None, **kwargs):
        skipped = _SKIPPED.get()
        if skipped is not None and skipped(self.name):
            initializer = _HostZeros()
        return super().add_weight(*args, initializer=initializer, **kwargs)
