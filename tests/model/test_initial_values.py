"""A network built to receive weights starts from zeros instead of drawn values."""

import keras
import numpy as np
import pytest

from tf_pacseg import build_model
from tf_pacseg.model.convolutions import Conv2D
from tf_pacseg.model.folding import fold_batch_norms
from tf_pacseg.model.initial_values import without_initial_values
from tf_pacseg.weights import saving

TINY = (1, 1, 1, 1)
IMAGES = np.random.default_rng(0).uniform(0, 255, (1, 33, 33, 3)).astype("float32")


@pytest.mark.parametrize(
    "base_architecture,head,fold_batch_norm",
    [
        ("resnet_v1_50", "pac", False),
        ("resnet_v2_50", "aspp", False),
        ("resnet_v1_50", "pac", True),
    ],
)
def test_every_weight_is_zero_in_the_block_and_drawn_outside(
    base_architecture, head, fold_batch_norm
):
    kwargs = dict(units_per_block=TINY, fold_batch_norm=fold_batch_norm)
    with without_initial_values():
        skipped = build_model(base_architecture, head, **kwargs)
    assert skipped.weights and all(not np.any(np.asarray(w)) for w in skipped.weights)
    drawn = build_model(base_architecture, head, **kwargs)
    assert [w.path for w in drawn.weights] == [w.path for w in skipped.weights]
    kernels = [np.asarray(w) for w in drawn.weights if w.name == "kernel"]
    assert kernels and all(kernel.std() > 0 for kernel in kernels)
    if not fold_batch_norm:
        gammas = [np.asarray(w) for w in drawn.weights if w.name == "gamma"]
        assert gammas and all(np.all(gamma == 1) for gamma in gammas)


def test_only_the_layers_named_start_at_zero():
    backbone = "resnet_v1_50."
    with without_initial_values(lambda name: name.startswith(backbone)):
        model = build_model("resnet_v1_50", "pac", units_per_block=TINY)
    kernels = {w.path: np.asarray(w) for w in model.weights if w.name == "kernel"}
    zero = sorted(path for path, kernel in kernels.items() if not np.any(kernel))
    assert zero and zero == sorted(path for path in kernels if path.startswith(backbone))
    assert len(zero) < len(kernels)


def test_the_block_ends_on_an_exception():
    with pytest.raises(RuntimeError), without_initial_values():
        raise RuntimeError
    layer = Conv2D(2, 1, kernel_initializer="ones")
    layer.build((None, 4, 4, 3))
    np.testing.assert_array_equal(np.asarray(layer.kernel), np.ones((1, 1, 3, 2)))


def test_loading_and_folding_draw_no_initial_values(tmp_path, monkeypatch):
    model = build_model("resnet_v1_50", "pac", units_per_block=TINY)
    path = str(tmp_path / "model.weights.h5")
    saving.save_model_weights(model, path)
    expected = np.asarray(model(IMAGES, training=False))

    def refuse(self, shape, dtype=None):
        raise AssertionError(f"{type(self).__name__} drew a {shape} initial value")

    for initializer in ("VarianceScaling", "Ones", "Zeros"):  # he_normal, glorot_uniform: the first
        monkeypatch.setattr(getattr(keras.initializers, initializer), "__call__", refuse)
    loaded = saving.load_model(path, output_stride=8)  # built twice: loaded, then transferred
    folded = fold_batch_norms(saving.load_model(path))
    assert loaded.output_stride == 8
    spread = float(expected.max() - expected.min())
    error = np.abs(np.asarray(folded(IMAGES, training=False)) - expected).max()
    assert spread > 0 and error <= 1e-4 * spread
