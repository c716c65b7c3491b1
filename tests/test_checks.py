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
