"""BatchNorm folded into the convolution before it, for inference.

In inference a BatchNorm is the affine map `y * s + (beta - mean * s)`,
`s = gamma / sqrt(moving_variance + epsilon)` per channel, so a conv (bias
`b`, or none) followed by it is one conv with kernel `kernel * s` (scaled
along the output channels) and bias `(b - mean) * s + beta`: one pass over
the activations fewer per BatchNorm. Every conv -> BatchNorm pair of the
network folds (`ConvBlocks` names the BatchNorm `<conv>.BatchNorm`); ResNet
v2's `preact` and `postnorm` BatchNorms follow an addition, not a conv, and
stay. The folded network computes the same logits in float32 up to
rounding (`tests/test_folding.py`), with `keras.ops`/NumPy only, so on both
backends.

Example:

```python
model = saving.load_model("model")
inference_model = fold_batch_norms(model)
logits = inference_model(images, training=False)
```
"""

import keras
import numpy as np

from tf_pacseg import checks
from tf_pacseg.model import winograd as winograd_conv
from tf_pacseg.model.initial_values import without_initial_values

BATCH_NORM_SUFFIX = ".BatchNorm"


def _layers_by_name(model):
    """{name: layer} of every layer with weights, nested models opened."""
    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.update(_layers_by_name(layer))
        elif layer.weights:
            layers[layer.name] = layer
    return layers


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def _fold_into(conv, batch_norm, target):
    """Assigns `conv` followed by `batch_norm` (inference) to `target`'s kernel and bias."""
    gamma, beta, mean, variance = (
        _numpy(getattr(batch_norm, name))
        for name in ("gamma", "beta", "moving_mean", "moving_variance")
    )
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    bias = _numpy(conv.bias) if getattr(conv, "use_bias", False) else 0.0
    # The kernels' last axis is the output channels (Conv2D, AtrousConv2D).
    kernel = _numpy(conv.kernel) * scale
    if isinstance(target, winograd_conv.WinogradConv2D):
        kernel = winograd_conv.transform_kernel(kernel)
    target.kernel.assign(kernel.astype(target.kernel.dtype))
    target.bias.assign(((bias - mean) * scale + beta).astype(target.bias.dtype))


def fold_batch_norms(model, winograd=False):
    """An inference copy of `model` with every conv -> BatchNorm pair as one biased conv.

    The copy is built from `model`'s config with `fold_batch_norm=True`
    (under the current dtype policy) and given `model`'s current weights,
    each folded pair computed in float64 and stored in the variables' dtype.
    It uses the moving statistics, so it is for inference
    (`training=False`) only; later changes to `model`'s weights do not reach
    it.

    Args:
        model: a `PACSegmenter` or `ResNetBackbone` (a model whose config
            takes `fold_batch_norm`), built.
        winograd: bool. The copy's eligible 3x3 convolutions run Winograd's
            algorithm (`tf_pacseg.model.winograd`; float32 only). Defaults
            to `False`.

    Returns:
        The folded model, of the same class (`model` itself if it is folded
        already, with the same `winograd`).
    """
    config = model.get_config()
    if "fold_batch_norm" not in config:
        raise checks.invalid(
            "model",
            "a PACSegmenter or ResNetBackbone (a config with `fold_batch_norm`)",
            received=f"model of class {type(model).__name__}",
        )
    if config["fold_batch_norm"]:
        if config["winograd"] != winograd:
            raise checks.invalid(
                "model",
                f"a model not yet folded, or folded with winograd={winograd}",
                received=f"a model folded with winograd={config['winograd']}",
            )
        return model
    with without_initial_values():  # Every weight is set below.
        folded = type(model).from_config({**config, "fold_batch_norm": True, "winograd": winograd})
    sources, targets = _layers_by_name(model), _layers_by_name(folded)
    folded_batch_norms = set()
    for name, target in targets.items():
        batch_norm = name + BATCH_NORM_SUFFIX
        if batch_norm in sources and batch_norm not in targets:
            _fold_into(sources[name], sources[batch_norm], target)
            folded_batch_norms.add(batch_norm)
        else:
            target.set_weights(sources[name].get_weights())
    # Both networks come from one config: only the folded BatchNorms are gone.
    if set(sources) - set(targets) != folded_batch_norms:
        raise RuntimeError(f"unmatched layers: {sorted(set(sources) - set(targets))}")
    return folded
