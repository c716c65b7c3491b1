import numpy as np
import pytest

from tf_pacseg import checks


@pytest.mark.parametrize(
    "check, args, match",
    [
        (checks.positive_int, ("batch_size", 0), r"`batch_size`\. .*Received: batch_size=0$"),
        (checks.positive_int, ("batch_size", True), "Received: batch_size=True"),
        (checks.positive_int, ("batch_size", 2.0), "Received: batch_size=2.0"),
        (checks.non_negative_int, ("num_workers", -1), "Received: num_workers=-1"),
        (checks.int_in_range, ("ignore_label", 300, 0, 255), r"in \[0, 255\]"),
        (checks.size_2d, ("crop_size", (513,)), r"Received: crop_size=\(513,\)"),
        (checks.size_2d, ("crop_size", (513, 0)), r"Received: crop_size=\(513, 0\)"),
        (checks.one_of, ("output", "probs", ("labels", "logits")), "Received: output='probs'"),
        (checks.positive_numbers, ("eval_scales", ()), r"Received: eval_scales=\(\)"),
        (checks.positive_numbers, ("eval_scales", (1.0, -0.5)), "eval_scales=.1.0, -0.5."),
        (checks.positive_numbers, ("eval_scales", ("a",)), "eval_scales=.'a',."),
        (checks.in_unit_interval, ("opacity", 1.5), "Received: opacity=1.5"),
        (checks.in_unit_interval, ("opacity", True), r"in \[0, 1\]\. Received: opacity=True"),
        (checks.number_in_range, ("momentum", 1.0, 0, 1, True, False), r"in \[0, 1\)\. "),
        (checks.number_in_range, ("decay", -1, 0), "a number >= 0. Received: decay=-1"),
        (checks.number_in_range, ("x", float("nan"), None, 3), "a number <= 3. Received: x=nan"),
        (checks.number_in_range, ("x", "1", 0), "Received: x='1'"),
        (checks.positive_number, ("scale_step", 0.0), "a number > 0. Received: scale_step=0.0"),
        (checks.positive_ints, ("rates", ()), r"sequence of strictly positive ints\. .*rates=\(\)"),
        (checks.positive_ints, ("rates", (1, 2.0)), r"Received: rates=\(1, 2\.0\)"),
        (checks.positive_ints, ("rates", 3), "Received: rates=3"),
        (checks.positive_ints, ("units", (1, 1, 1), 4), r"4 strictly positive ints\. "),
        (checks.ends_with, ("path", "m.h5", ".weights.h5"), "ending in .weights.h5. .*path='m.h5'"),
        (checks.ends_with, ("path", None, ".xml"), "Received: path=None"),
        (checks.units_per_block, ((1, 0, 1, 1),), r"Received: units_per_block=\(1, 0, 1, 1\)"),
        (checks.units_per_block, ((),), r"Received: units_per_block=\(\)"),
    ],
)
def test_checks_raise_keras_style_messages(check, args, match):
    with pytest.raises(ValueError, match="Invalid value for argument") as info:
        check(*args)
    assert info.match(match)


def test_checks_return_normalised_values():
    assert checks.positive_int("n", 3) == 3
    assert checks.non_negative_int("n", 0) == 0
    assert checks.size_2d("crop_size", [5, 7]) == (5, 7)
    assert checks.positive_numbers("scales", ["0.5", 1]) == (0.5, 1.0)
    assert checks.in_unit_interval("opacity", 1) == 1.0
    assert checks.one_of("mode", "a", ("a", "b")) == "a"
    assert checks.number_in_range("momentum", 0, 0, 1, include_high=False) == 0.0
    assert checks.positive_number("scale", np.float32(0.25)) == 0.25
    assert checks.positive_int("n", np.int64(2)) == 2  # NumPy's ints count.
    assert checks.positive_ints("rates", [np.int32(3), 1]) == (3, 1)
    assert type(checks.positive_ints("rates", [np.int32(3)])[0]) is int
    assert checks.ends_with("path", "a/model.weights.h5", ".weights.h5") == "a/model.weights.h5"
    assert checks.units_per_block(None) is None
    assert checks.units_per_block([1, 2, 3, 4]) == (1, 2, 3, 4)


def test_invalid_words_custom_conditions_like_the_checks():
    error = checks.invalid("kernel_size", "an odd positive int", 4)
    assert str(error) == (
        "Invalid value for argument `kernel_size`. Expected an odd positive int. "
        "Received: kernel_size=4"
    )
    error = checks.invalid("labels", "shape [N, H, W]", received="labels.shape=(4, 4)")
    assert str(error).endswith("Expected shape [N, H, W]. Received: labels.shape=(4, 4)")
