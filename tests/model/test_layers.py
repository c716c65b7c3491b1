"""Layers and conv blocks against NumPy / raw tf.nn references."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import assert_config_round_trip
from helpers import run_python

from tf_pacseg.model import dilated_conv
from tf_pacseg.model.blocks import ConvBlocks
from tf_pacseg.model.convolutions import AtrousConv2D, Conv2D, PyramidAtrousConv, atrous_conv2d
from tf_pacseg.model.layers import BATCH_NORM_EPSILON, BatchNorm


def _conv_block_model(in_channels, filters, kernel_size, stride=1, rate=1, **kwargs):
    """A one-conv Keras model from ConvBlocks, and its conv layer."""
    conv = ConvBlocks(0.0, 0.9, True, False, "glorot_uniform")
    inputs = keras.Input((None, None, in_channels))
    outputs = conv(inputs, filters, kernel_size, "c", stride=stride, rate=rate, **kwargs)
    model = keras.Model(inputs, outputs)
    return model, model.get_layer("c")


def _random_kernel(rng, layer):
    kernel = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(kernel)
    return kernel


# --- strided convolution: TF1-slim's conv2d_same ---------------------------------


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
@pytest.mark.parametrize("size", [(8, 8), (9, 9), (10, 7), (13, 16), (1, 2)])
def test_strided_conv_pads_explicitly_like_conv2d_same(kernel_size, size):
    """Stride 2: pad (k - 1) // 2 before and the rest after, then VALID."""
    rng = np.random.default_rng(kernel_size * 100 + size[0] * 10 + size[1])
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    model, layer = _conv_block_model(3, 4, kernel_size, stride=2, batch_norm=False, activation=None)
    kernel = _random_kernel(rng, layer)
    before = (kernel_size - 1) // 2
    after = kernel_size - 1 - before
    padded = np.pad(x, [(0, 0), (before, after), (before, after), (0, 0)])
    expected = tf.nn.conv2d(padded, kernel, strides=2, padding="VALID").numpy()
    result = np.asarray(model(x))
    assert result.shape == (2, -(-size[0] // 2), -(-size[1] // 2), 4)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_strided_conv_differs_from_tf_same_padding_only_on_even_sizes(kernel_size):
    """Why the explicit padding matters: TF 'SAME' puts the extra pad at the
    bottom/right on even inputs, shifting every output pixel by one input pixel."""
    rng = np.random.default_rng(kernel_size)
    model, layer = _conv_block_model(2, 3, kernel_size, stride=2, batch_norm=False, activation=None)
    kernel = _random_kernel(rng, layer)
    for size, same_alignment in [(9, True), (11, True), (8, False), (12, False)]:
        x = rng.normal(size=(1, size, size, 2)).astype("float32")
        tf_same = tf.nn.conv2d(x, kernel, strides=2, padding="SAME").numpy()
        assert np.allclose(np.asarray(model(x)), tf_same, atol=1e-4) == same_alignment, size


@pytest.mark.parametrize("rate", [1, 2, 4, 12])
@pytest.mark.parametrize("size", [(5, 5), (8, 8), (9, 6)])
def test_dilated_conv_uses_same_padding(rate, size):
    """Stride 1 with dilation is TF 'SAME', also when the rate exceeds the map."""
    rng = np.random.default_rng(rate * 10 + size[0])
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    model, layer = _conv_block_model(3, 5, 3, rate=rate, batch_norm=False, activation=None)
    kernel = _random_kernel(rng, layer)
    expected = tf.nn.conv2d(x, kernel, strides=1, padding="SAME", dilations=rate).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-5)


def test_conv_block_is_conv_batch_norm_relu_in_inference():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, 6, 3)).astype("float32")
    model, layer = _conv_block_model(3, 4, 3)
    kernel = _random_kernel(rng, layer)
    bn = model.get_layer("c.BatchNorm")
    gamma, beta, mean = (rng.normal(size=4).astype("float32") for _ in range(3))
    variance = rng.uniform(0.5, 2.0, 4).astype("float32")
    bn.set_weights([gamma, beta, mean, variance])
    conv = tf.nn.conv2d(x, kernel, strides=1, padding="SAME").numpy()
    expected = np.maximum((conv - mean) / np.sqrt(variance + 1e-5) * gamma + beta, 0.0)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=1e-5)
    assert not layer.use_bias


@pytest.mark.parametrize(
    "kwargs,layer_class",
    [
        ({}, Conv2D),
        ({"stride": 2}, Conv2D),
        ({"rate": 2}, AtrousConv2D),
        ({"pyramid_rates": (1, 3)}, PyramidAtrousConv),
    ],
    ids=["conv", "strided", "atrous", "pyramid"],
)
def test_conv_block_with_fold_batch_norm_is_a_biased_conv_and_relu(kwargs, layer_class):
    """The slot a folded BatchNorm goes to (`tf_pacseg.model.folding`)."""
    conv = ConvBlocks(0.0, 0.9, True, False, "glorot_uniform", fold_batch_norm=True)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, conv(inputs, 4, 3, "c", **kwargs))
    layer = model.get_layer("c")
    assert type(layer) is layer_class and layer.use_bias
    assert not any(isinstance(other, BatchNorm) for other in model.layers)
    assert model.layers[-1].name == "c.relu"
    # Without a BatchNorm there is nothing to fold: no bias either.
    unnormalised = conv(inputs, 4, 3, "d", batch_norm=False, activation=None, **kwargs)
    assert not keras.Model(inputs, unnormalised).get_layer("d").use_bias


# --- PyramidAtrousConv ------------------------------------------------------------


def _pac_reference(x, kernel, rates):
    """(conv(x, W, 1) + sum_r conv(x, W, r)) / len(rates), as in the original."""
    total = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
    for rate in rates:
        total += tf.nn.conv2d(x, kernel, strides=1, padding="SAME", dilations=rate)
    return (total / len(rates)).numpy()


@pytest.mark.parametrize(
    "rates",
    [(1, 3, 5, 7, 9), (2,), (1,), (1, 2, 4), (3, 3), (6, 12, 18)],
    ids=lambda rates: "-".join(map(str, rates)),
)
@pytest.mark.parametrize("size", [(5, 7), (12, 12), (13, 4)])
def test_pyramid_atrous_conv_matches_shared_kernel_formula(rates, size):
    rng = np.random.default_rng(len(rates) * 10 + size[0])
    x = rng.normal(size=(2, *size, 6)).astype("float32")
    layer = PyramidAtrousConv(4, rates=rates)
    layer.build(x.shape)
    kernel = rng.normal(size=(3, 3, 6, 4)).astype("float32")
    layer.kernel.assign(kernel)
    expected = _pac_reference(x, kernel, rates)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_pyramid_atrous_conv_default_counts_rate_one_twice_over_five():
    """The released weights' quirk: six convolutions divided by five."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 11, 10, 3)).astype("float32")
    layer = PyramidAtrousConv(2)
    assert layer.rates == (1, 3, 5, 7, 9)
    layer.build(x.shape)
    kernel = layer.kernel.numpy()
    convs = {r: tf.nn.conv2d(x, kernel, 1, "SAME", dilations=r).numpy() for r in (1, 3, 5, 7, 9)}
    expected = (2 * convs[1] + convs[3] + convs[5] + convs[7] + convs[9]) / 5
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_pyramid_atrous_conv_has_one_shared_kernel():
    layer = PyramidAtrousConv(7, rates=(1, 2, 3))
    assert layer.compute_output_shape((None, 9, 9, 5)) == (None, 9, 9, 7)
    layer.build((None, 9, 9, 5))
    assert [tuple(w.shape) for w in layer.weights] == [(3, 3, 5, 7)]


def test_pyramid_atrous_conv_adds_its_bias_after_the_average():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(2, 9, 8, 5)).astype("float32")
    layer = PyramidAtrousConv(4, rates=(1, 3, 5), use_bias=True)
    layer.build(x.shape)
    assert [tuple(w.shape) for w in layer.weights] == [(3, 3, 5, 4), (4,)]
    kernel = rng.normal(size=(3, 3, 5, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    layer.set_weights([kernel, bias])
    expected = _pac_reference(x, kernel, (1, 3, 5)) + bias
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"filters": 0}, r"Received: filters=0"),
        ({"filters": -3}, r"Received: filters=-3"),
        ({"filters": 4, "rates": ()}, r"Received: rates=\(\)"),
        ({"filters": 4, "rates": (1, 0)}, r"Received: rates=\(1, 0\)"),
        ({"filters": 4, "rates": (3, -2)}, r"Received: rates=\(3, -2\)"),
    ],
)
def test_pyramid_atrous_conv_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PyramidAtrousConv(**kwargs)


def test_pyramid_atrous_conv_config_round_trip_gives_same_outputs():
    x = np.random.default_rng(7).normal(size=(1, 6, 6, 3)).astype("float32")
    layer = PyramidAtrousConv(4, rates=(2, 4), kernel_regularizer=keras.regularizers.L2(0.5))
    layer(x)
    clone = assert_config_round_trip(layer, x)
    assert clone.rates == (2, 4) and clone.filters == 4
    assert clone.kernel_regularizer.get_config() == {"l2": 0.5}


# --- BatchNorm ----------------------------------------------------------------------


def _random_batch_norm(rng, channels, **kwargs):
    layer = BatchNorm(**kwargs)
    layer.build((None, None, None, channels))
    gamma = rng.uniform(0.5, 1.5, channels).astype("float32")
    beta = rng.normal(size=channels).astype("float32")
    mean = rng.normal(size=channels).astype("float32")
    # Small variances, so that epsilon 1e-5 vs Keras' default 1e-3 is visible.
    variance = rng.uniform(1e-4, 1e-3, channels).astype("float32")
    layer.set_weights([gamma, beta, mean, variance])
    return layer, (gamma, beta, mean, variance)


def test_batch_norm_inference_uses_moving_statistics_and_epsilon_1e_5():
    rng = np.random.default_rng(8)
    layer, (gamma, beta, mean, variance) = _random_batch_norm(rng, 5)
    assert layer.epsilon == BATCH_NORM_EPSILON == 1e-5
    x = (mean + rng.normal(size=(2, 4, 3, 5)) * 0.02).astype("float32")
    expected = (x - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected, rtol=1e-4, atol=1e-4)
    with_keras_epsilon = (x - mean) / np.sqrt(variance + 1e-3) * gamma + beta
    assert not np.allclose(with_keras_epsilon, expected, rtol=1e-2)


def _numpy_training_batch_norm(x, gamma, beta, mean, variance, momentum):
    """TF1 fused BatchNorm in training: (outputs, new moving mean, new moving variance).

    Normalises with the biased batch variance; averages the unbiased one,
    n / (n - 1) times it over the n values per channel (a single value's zero
    variance stays zero).
    """
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    batch_mean, batch_variance = x.mean(axes), x.var(axes)
    outputs = (x - batch_mean) / np.sqrt(batch_variance + BATCH_NORM_EPSILON) * gamma + beta
    unbiased = batch_variance * count / max(count - 1, 1)
    return (
        outputs,
        momentum * mean + (1 - momentum) * batch_mean,
        momentum * variance + (1 - momentum) * unbiased,
    )


# Runs the layer in training mode on KERAS_BACKEND, eagerly and compiled (XLA
# on TensorFlow, jax.jit on JAX), from the weights and inputs in an .npz file,
# with the layer's `fused` argument given as JSON.
_BATCH_NORM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from tf_pacseg.model.layers import BatchNorm

    cases, output = json.loads(sys.argv[1]), sys.argv[2]
    data, fused = np.load(sys.argv[3]), json.loads(sys.argv[4])
    results = {}

    def compiled(layer, x):
        if keras.backend.backend() == "jax":
            import jax

            def step(trainable, non_trainable, x):
                return layer.stateless_call(trainable, non_trainable, x, training=True)

            y, non_trainable = jax.jit(step)(
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables],
                x,
            )
            for variable, value in zip(layer.non_trainable_variables, non_trainable):
                variable.assign(value)
            return y
        import tensorflow as tf

        return tf.function(lambda x: layer(x, training=True), jit_compile=True)(x)

    for name, (momentum, dtype) in cases.items():
        x = data[name + "/x"]
        for mode in ("eager", "compiled"):
            layer = BatchNorm(momentum=momentum, dtype=dtype, fused=fused)
            layer.build(x.shape)
            layer.set_weights([data[name + "/" + w] for w in ("gamma", "beta", "mean", "var")])
            y = layer(x, training=True) if mode == "eager" else compiled(layer, x)
            key = name + "/" + mode
            results[key + "/y"] = np.asarray(keras.ops.cast(y, "float32"))
            results[key + "/y_dtype"] = np.asarray(keras.backend.standardize_dtype(y.dtype))
            for weight in ("moving_mean", "moving_variance"):
                variable = getattr(layer, weight)
                results[key + "/" + weight] = np.asarray(variable.numpy())
                results[key + "/" + weight + "_dtype"] = np.asarray(variable.dtype)
    np.savez(output, **results)
    """
)

# name: (input shape, momentum, dtype policy, output tolerance, statistics tolerance).
# Compiled, XLA may skip the rounding of the inputs to float16/bfloat16
# (excess precision), which moves the statistics by ~1e-5.
_BATCH_NORM_CASES = {
    "conv": ((4, 6, 5, 3), 0.95, "float32", 1e-4, 1e-5),
    "head": ((2, 7, 5, 4), 0.9997, "float32", 1e-4, 1e-5),
    "image_pooling": ((8, 1, 1, 3), 0.9, "float32", 1e-4, 1e-5),  # n = 8: factor 8/7
    "single_value": ((1, 1, 1, 2), 0.9, "float32", 1e-4, 1e-5),  # n = 1: zero variance
    "float16": ((3, 5, 4, 3), 0.95, "mixed_float16", 1e-2, 1e-4),
    "bfloat16": ((3, 5, 4, 3), 0.95, "mixed_bfloat16", 5e-2, 1e-3),
}


@pytest.mark.parametrize(
    "backend,fused",
    [("tensorflow", None), ("tensorflow", False), ("jax", None)],
    ids=["tensorflow-fused_kernel", "tensorflow-keras_ops", "jax"],
)
def test_batch_norm_training_averages_the_unbiased_variance_like_tf1(backend, fused, tmp_path):
    """Eager and compiled, float32 and mixed precision, on each backend and kernel, against
    NumPy."""
    import ml_dtypes

    rng = np.random.default_rng(9)
    arrays, cases, expected = {}, {}, {}
    for name, (shape, momentum, policy, _, _) in _BATCH_NORM_CASES.items():
        x = rng.normal(2.0, 3.0, size=shape).astype("float32")
        channels = shape[-1]
        weights = {
            "gamma": rng.uniform(0.5, 1.5, channels),
            "beta": rng.normal(size=channels),
            "mean": rng.normal(size=channels),
            "var": rng.uniform(0.5, 2.0, channels),
        }
        arrays.update({f"{name}/{k}": v.astype("float32") for k, v in {"x": x, **weights}.items()})
        cases[name] = (momentum, policy)
        # Mixed precision sees the inputs rounded to its compute dtype.
        compute = {"mixed_float16": np.float16, "mixed_bfloat16": ml_dtypes.bfloat16}
        seen = x.astype(compute.get(policy, np.float32)).astype(np.float64)
        floats = {k: v.astype("float32").astype(np.float64) for k, v in weights.items()}
        expected[name] = _numpy_training_batch_norm(
            seen, floats["gamma"], floats["beta"], floats["mean"], floats["var"], momentum
        )
    np.savez(tmp_path / "inputs.npz", **arrays)
    output = tmp_path / "outputs.npz"
    arguments = [json.dumps(cases), output, tmp_path / "inputs.npz", json.dumps(fused)]
    run_python(_BATCH_NORM_SCRIPT, arguments, backend)
    results = np.load(output)
    for name, (_, _, policy, tolerance, statistics_tolerance) in _BATCH_NORM_CASES.items():
        outputs, moving_mean, moving_variance = expected[name]
        for mode in ("eager", "compiled"):
            key = f"{name}/{mode}"
            assert str(results[f"{key}/y_dtype"]) == policy.removeprefix("mixed_"), key
            np.testing.assert_allclose(
                results[f"{key}/y"], outputs, rtol=tolerance, atol=tolerance, err_msg=key
            )
            # Statistics in float32 whatever the policy.
            assert str(results[f"{key}/moving_variance_dtype"]) == "float32", key
            for weight, value in (
                ("moving_mean", moving_mean),
                ("moving_variance", moving_variance),
            ):
                np.testing.assert_allclose(
                    results[f"{key}/{weight}"],
                    value,
                    rtol=statistics_tolerance,
                    atol=statistics_tolerance / 10,
                    err_msg=key,
                )


def test_batch_norm_moving_statistics_equal_tf1_fused_batch_norm_with_slim_averages():
    """TF1 graph: fused_batch_norm(is_training=True) + assign_moving_average, as slim does."""
    rng = np.random.default_rng(11)
    decay = 0.9
    for shape in [(8, 1, 1, 4), (2, 9, 7, 4)]:
        x = rng.normal(1.0, 2.0, size=shape).astype("float32")
        layer, (gamma, beta, mean, variance) = _random_batch_norm(rng, 4, momentum=decay)
        graph = tf.Graph()
        with graph.as_default():
            moving = [tf.compat.v1.Variable(v) for v in (mean, variance)]
            y, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=BATCH_NORM_EPSILON, is_training=True
            )
            updates = [
                tf.compat.v1.assign_sub(m, (m - b) * (1 - decay))
                for m, b in zip(moving, (batch_mean, batch_variance), strict=True)
            ]
            with tf.compat.v1.Session(graph=graph) as session:
                session.run(tf.compat.v1.global_variables_initializer())
                reference = session.run([y, *updates])
        ours = layer(x, training=True)
        np.testing.assert_allclose(np.asarray(ours), reference[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.moving_mean.numpy(), reference[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.moving_variance.numpy(), reference[2], rtol=1e-5)


# Two replicas of one MirroredStrategy, fed 3 and 5 images: the unbiased
# correction uses each replica's own count, or the global one when synchronised.
_DISTRIBUTED_BATCH_NORM_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tf_pacseg.training import distribute

    distribute.configure_logical_cpus(2)
    import tensorflow as tf
    from tf_pacseg.model.layers import BatchNorm

    data = np.load(sys.argv[1])
    halves = [data["x"][:3], data["x"][3:]]
    strategy = distribute.create_strategy(devices=["/cpu:0", "/cpu:1"])
    results = {}
    for synchronized in (False, True):
        with strategy.scope():
            layer = BatchNorm(momentum=0.9, synchronized=synchronized)
            layer.build(data["x"].shape)
            layer.set_weights([data[w] for w in ("gamma", "beta", "mean", "var")])
        inputs = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(halves[context.replica_id_in_sync_group])
        )

        @tf.function
        def step(x):
            layer(x, training=True)
            return tf.identity(layer.moving_mean.value), tf.identity(layer.moving_variance.value)

        means, variances = strategy.run(step, args=(inputs,))
        key = "sync" if synchronized else "local"
        for name, value in (("mean", means), ("var", variances)):
            results[key + "/" + name] = np.stack(
                [v.numpy() for v in strategy.experimental_local_results(value)]
            )
    np.savez(sys.argv[2], **results)
    """
)


def test_batch_norm_under_mirrored_strategy_counts_per_replica_or_globally(tmp_path):
    rng = np.random.default_rng(12)
    x = rng.normal(1.0, 2.0, size=(8, 1, 1, 3)).astype("float32")
    weights = {
        "gamma": rng.uniform(0.5, 1.5, 3).astype("float32"),
        "beta": rng.normal(size=3).astype("float32"),
        "mean": rng.normal(size=3).astype("float32"),
        "var": rng.uniform(0.5, 2.0, 3).astype("float32"),
    }
    np.savez(tmp_path / "inputs.npz", x=x, **weights)
    run_python(
        _DISTRIBUTED_BATCH_NORM_SCRIPT,
        [tmp_path / "inputs.npz", tmp_path / "outputs.npz"],
        "tensorflow",
    )
    results = np.load(tmp_path / "outputs.npz")
    initial = [weights[w].astype(np.float64) for w in ("gamma", "beta", "mean", "var")]
    for replica, images in enumerate([x[:3], x[3:]]):
        _, mean, variance = _numpy_training_batch_norm(images, *initial, 0.9)
        np.testing.assert_allclose(results["local/mean"][replica], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results["local/var"][replica], variance, rtol=1e-5)
        _, mean, variance = _numpy_training_batch_norm(x, *initial, 0.9)
        np.testing.assert_allclose(results["sync/mean"][replica], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results["sync/var"][replica], variance, rtol=1e-5)


def test_batch_norm_rejects_renormalization():
    with pytest.raises(
        ValueError, match="Invalid value for argument `renorm`.*Received: renorm=True"
    ):
        BatchNorm(renorm=True)


def test_batch_norm_rejects_a_mask_in_training():
    layer = BatchNorm()
    x = np.ones((2, 3, 3, 2), "float32")
    with pytest.raises(ValueError, match="Invalid value for argument `mask`"):
        layer(x, training=True, mask=np.ones((2, 3, 3), bool))


def test_batch_norm_without_batch_statistics_keeps_moving_stats_in_training():
    rng = np.random.default_rng(10)
    layer, (gamma, beta, mean, variance) = _random_batch_norm(rng, 3, use_batch_statistics=False)
    x = rng.normal(2.0, 3.0, size=(4, 6, 5, 3)).astype("float32")
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * y)
    np.testing.assert_allclose(np.asarray(y), np.asarray(layer(x, training=False)), rtol=1e-6)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
    # gamma and beta still train (what Keras' trainable=False would also freeze).
    gradients = tape.gradient(loss, [layer.gamma, layer.beta])
    assert all(np.abs(g.numpy()).min() > 0 for g in gradients)


def test_batch_norm_config_round_trip_keeps_flag_and_epsilon():
    rng = np.random.default_rng(9)
    layer, _ = _random_batch_norm(rng, 3, use_batch_statistics=False, momentum=0.9997, fused=False)
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    clone = assert_config_round_trip(layer, x)
    assert clone.use_batch_statistics is False and clone.fused is False
    assert clone.epsilon == 1e-5 and clone.momentum == 0.9997


# --- BatchNorm: TensorFlow's fused kernel and the keras.ops path ---------------------


def _fused_kernel_calls(layer, x, training, mask=None):
    """How many FusedBatchNormV3 ops the layer's traced call holds."""
    graph = (
        tf.function(lambda x: layer(x, training=training, mask=mask))
        .get_concrete_function(tf.TensorSpec(x.shape, x.dtype))
        .graph
    )
    return sum(op.type == "FusedBatchNormV3" for op in graph.get_operations())


def _run_batch_norm(layer, x, training, seed):
    """(outputs, moving mean, moving variance, d/dx, d/dgamma, d/dbeta) of one call."""
    x = tf.constant(x)
    # Random output weights: the sum of squares of a normalised map barely depends on x.
    weights = np.random.default_rng(seed).normal(size=x.shape).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    gradients = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return [np.asarray(tf.cast(y, tf.float32)), *moving] + [
        np.asarray(tf.cast(g, tf.float32)) for g in gradients
    ]


# policy: (tolerance of the outputs and gradients, of the moving statistics).
_KERNEL_TOLERANCES = {
    "float32": (1e-4, 1e-6),
    "mixed_float16": (2e-3, 1e-6),
    "mixed_bfloat16": (2e-2, 1e-6),
}


@pytest.mark.parametrize("policy", list(_KERNEL_TOLERANCES))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize(
    "shape", [(4, 6, 5, 3), (8, 1, 1, 3), (1, 1, 1, 3)], ids=["conv", "image_pooling", "n=1"]
)
def test_batch_norm_fused_kernel_computes_what_keras_ops_computes(policy, training, shape):
    """Outputs, moving statistics and gradients (x, gamma, beta) agree; only `fused=None`
    runs TensorFlow's kernel, in training and in inference."""
    rng = np.random.default_rng(len(shape) + shape[0])
    x = rng.normal(2.0, 3.0, size=shape).astype("float32")
    weights = [
        rng.uniform(0.5, 1.5, 3),
        rng.normal(size=3),
        rng.normal(size=3),
        rng.uniform(0.5, 2.0, 3),
    ]
    results = {}
    for fused in (None, False):
        layer = BatchNorm(momentum=0.9, fused=fused, dtype=policy)
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
        assert _fused_kernel_calls(layer, x, training) == (1 if fused is None else 0)
        results[fused] = _run_batch_norm(layer, x, training, seed=1)
    tolerance, statistics_tolerance = _KERNEL_TOLERANCES[policy]
    names = ["outputs", "moving_mean", "moving_variance", "d_x", "d_gamma", "d_beta"]
    for name, fused, plain in zip(names, results[None], results[False], strict=True):
        atol = statistics_tolerance if name.startswith("moving") else tolerance
        scale = max(1.0, float(np.abs(plain).max()))
        np.testing.assert_allclose(fused, plain, rtol=0, atol=atol * scale, err_msg=name)
    if training:  # The moving statistics moved, and by the same amount.
        assert not np.allclose(results[None][2], weights[3].astype("float32"))


def test_batch_norm_runs_keras_ops_where_the_fused_kernel_does_not_apply():
    rng = np.random.default_rng(13)
    # Not 4D; float64; with a mask (inference).
    for x, mask in [
        (rng.normal(size=(6, 3)).astype("float32"), None),
        (rng.normal(size=(2, 5, 3)).astype("float32"), None),
        (rng.normal(size=(2, 4, 4, 3)).astype("float64"), None),
        (rng.normal(size=(2, 4, 4, 3)).astype("float32"), np.ones((2, 4, 4), bool)),
    ]:
        layer = BatchNorm(dtype=x.dtype)
        for training in (True, False) if mask is None else (False,):
            assert _fused_kernel_calls(layer, x, training, mask) == 0, (x.shape, x.dtype)
    # Synchronised statistics in training; inference still runs the kernel.
    synchronized = BatchNorm(synchronized=True)
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    assert _fused_kernel_calls(synchronized, x, training=True) == 0
    assert _fused_kernel_calls(synchronized, x, training=False) == 1
    # Moving statistics in training (`use_batch_statistics=False`): the inference kernel.
    frozen = BatchNorm(use_batch_statistics=False)
    assert _fused_kernel_calls(frozen, x, training=True) == 1


def test_batch_norm_fused_true_rejects_what_the_kernel_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match=r"synchronized=True.*Received: fused=True"):
        BatchNorm(fused=True, synchronized=True)
    with pytest.raises(ValueError, match=r"Expected one of .*Received: fused='yes'"):
        BatchNorm(fused="yes")
    layer = BatchNorm(fused=True)
    with pytest.raises(ValueError, match=r"needs 4D channels-last inputs.*shape=\(6, 3\)"):
        layer(np.ones((6, 3), "float32"), training=True)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match=r"on the jax backend.*Received: fused=True"):
        BatchNorm(fused=True)
    assert BatchNorm().fused is None  # Auto: keras.ops on JAX, no error.


# Writes Conv2D's outputs of 1x1 kernels, strides 1 and 2, and on JAX whether
# the traced call holds a convolution.
_POINTWISE = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from tf_pacseg.model.convolutions import Conv2D

    x = np.random.default_rng(0).normal(size=(2, 7, 8, 5)).astype("float32")
    results = {}
    for stride in (1, 2):
        layer = Conv2D(3, 1, strides=stride, use_bias=True)
        layer.build(x.shape)
        rng = np.random.default_rng(stride)
        shapes = ((1, 1, 5, 3), (3,))
        layer.set_weights([rng.normal(size=shape).astype("float32") for shape in shapes])
        results[f"stride{stride}"] = np.asarray(layer(x))
        if keras.backend.backend() == "jax":
            import jax

            jaxpr = str(jax.make_jaxpr(lambda v: layer(v))(x))
            results[f"convolution{stride}"] = np.array("conv_general_dilated" in jaxpr)
    np.savez(sys.argv[1], **results)
    """
)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_pointwise_conv2d_is_the_product_of_every_strided_pixel(backend, tmp_path):
    """1x1 kernels: on JAX a matrix product at stride 1; equal results on both backends."""
    path = tmp_path / "outputs.npz"
    run_python(_POINTWISE, [path], backend)
    results = np.load(path)
    x = np.random.default_rng(0).normal(size=(2, 7, 8, 5)).astype("float32")
    for stride in (1, 2):
        rng = np.random.default_rng(stride)
        kernel, bias = (rng.normal(size=shape).astype("float32") for shape in ((1, 1, 5, 3), (3,)))
        expected = x[:, ::stride, ::stride] @ kernel[0, 0] + bias
        np.testing.assert_allclose(results[f"stride{stride}"], expected, rtol=1e-5, atol=1e-5)
        if backend == "jax":  # Strided: a convolution (see `Conv2D`).
            assert bool(results[f"convolution{stride}"]) == (stride == 2)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("rate", [1, 3, 7])
def test_atrous_conv2d_equals_dilated_conv_and_its_gradients(kernel_size, rate):
    rng = np.random.default_rng(kernel_size * 10 + rate)
    x = tf.constant(rng.normal(size=(2, 6, 9, 4)).astype("float32"))
    layer = AtrousConv2D(3, kernel_size, dilation_rate=rate)
    layer.build(x.shape)
    kernel = layer.kernel.value
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = layer(x)
        # The space-to-batch formulation: TensorFlow's own CPU kernels have no
        # dilated gradient (oneDNN's do).
        theirs = tf.nn.atrous_conv2d(x, kernel, rate, padding="SAME")
        ours_sum, theirs_sum = tf.reduce_sum(ours**2), tf.reduce_sum(theirs**2)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(
        tape.gradient(ours_sum, [x, kernel]), tape.gradient(theirs_sum, [x, kernel]), strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rate", [2, 9])
def test_atrous_conv2d_runs_tensorflows_kernel_and_equals_the_tap_products(rate):
    """A single rate on TensorFlow: the dilated Conv2D kernel (rate 9 > the map)."""
    rng = np.random.default_rng(rate)
    x = tf.constant(rng.normal(size=(2, 7, 8, 5)).astype("float32"))
    layer = AtrousConv2D(6, 3, dilation_rate=rate)
    layer.build(x.shape)
    dilated_conv.supported.cache_clear()  # Probed afresh, from inside a tf.function.
    convolutions = [
        op
        for op in tf.function(layer).get_concrete_function(x).graph.get_operations()
        if op.type == "Conv2D"
    ]
    assert [op.get_attr("dilations") for op in convolutions] == [[1, rate, rate, 1]]
    kernel = layer.kernel.value
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = layer(x)
        taps = atrous_conv2d(x, kernel, {rate: 1})
        ours_sum, taps_sum = tf.reduce_sum(ours**2), tf.reduce_sum(taps**2)
    np.testing.assert_allclose(ours.numpy(), taps.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(
        tape.gradient(ours_sum, [x, kernel]), tape.gradient(taps_sum, [x, kernel]), strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    with dilated_conv.padding_first():  # The form the ONNX export traces.
        np.testing.assert_allclose(layer(x).numpy(), ours.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_atrous_conv2d_has_gradients_in_half_precision(dtype):
    """oneDNN's kernel in bfloat16; float16 on the CPU has none: the tap products."""
    x = np.random.default_rng(3).normal(size=(1, 6, 7, 4)).astype("float32")
    layer = AtrousConv2D(3, 3, dilation_rate=2, dtype=f"mixed_{dtype}")
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        outputs = layer(tf.constant(x, dtype))
        total = tf.reduce_sum(tf.cast(outputs, "float32") ** 2)
    gradient = tape.gradient(total, layer.kernel)
    expected = atrous_conv2d(x, layer.kernel.value, {2: 1})
    assert outputs.dtype == dtype
    np.testing.assert_allclose(np.asarray(outputs, "float32"), expected, rtol=0.05, atol=0.05)
    assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0


_WITHOUT_ONEDNN = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    from tf_pacseg.model import dilated_conv
    from tf_pacseg.model.convolutions import AtrousConv2D, atrous_conv2d

    layer = AtrousConv2D(3, 3, dilation_rate=2)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        outputs = layer(x)
        total = tf.reduce_sum(outputs)
    gradient = tape.gradient(total, layer.kernel)
    np.testing.assert_allclose(outputs, atrous_conv2d(x, layer.kernel.value, {2: 1}), atol=1e-5)
    print(dilated_conv.supported("float32"), float(tf.reduce_sum(tf.abs(gradient))) > 0)
    """
)


def test_atrous_conv2d_keeps_the_tap_products_without_onednn(monkeypatch):
    """TensorFlow's own CPU kernels refuse dilated gradients: the layer still trains."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    result = run_python(_WITHOUT_ONEDNN, [], "tensorflow")
    assert result.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0}, "Received: filters=0"),
        ({"filters": 4, "kernel_size": 2}, "Received: kernel_size=2"),
        ({"filters": 4, "dilation_rate": 0}, "Received: dilation_rate=0"),
    ],
)
def test_atrous_conv2d_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AtrousConv2D(**kwargs)


def test_atrous_conv2d_with_bias_equals_a_biased_dilated_conv():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(2, 7, 9, 3)).astype("float32")
    layer = AtrousConv2D(4, 3, dilation_rate=2, use_bias=True)
    layer.build(x.shape)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    layer.set_weights([kernel, bias])
    expected = tf.nn.conv2d(x, kernel, 1, "SAME", dilations=2).numpy() + bias
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_atrous_conv2d_config_round_trip():
    x = np.random.default_rng(10).normal(size=(1, 9, 8, 2)).astype("float32")
    layer = AtrousConv2D(4, 3, dilation_rate=6, use_bias=True, name="a.b")
    layer(x)
    layer.bias.assign(np.arange(4, dtype="float32"))
    restored = assert_config_round_trip(layer, x)
    assert (restored.filters, restored.kernel_size, restored.dilation_rate, restored.name) == (
        4,
        3,
        6,
        "a.b",
    )
    assert restored.use_bias
