"""Argument checks shared by the library, with Keras-style messages.

Each check raises `ValueError("Invalid value for argument `x`. Expected ...
Received: x=...")` and returns the value (normalised where that helps), so
that a caller can write `crop_size = checks.size_2d("crop_size", crop_size)`.
A condition that no check covers raises `checks.invalid(...)`, which words
the message the same way.
"""

import math
import numbers


def invalid(name, expected, value=None, received=None):
    """The `ValueError` of every check.

    Args:
        name: str. The argument.
        expected: str. What a valid value is, e.g. `"an odd positive int"`.
        value: the value received, shown as `name=value!r`.
        received: str or None. Shown instead of `name=value!r`: a value that
            needs describing (`"labels.shape=(4, 4)"`) or several arguments
            at once. Defaults to `None`.

    Returns:
        A `ValueError` for the caller to raise.
    """
    received = f"{name}={value!r}" if received is None else received
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {received}"
    )


def _is_int(value):
    # numbers.Integral takes NumPy's integers too; bool is an int, but not a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name, value):
    """Returns `value` if it is an int >= 1 (not a bool); raises otherwise."""
    if not _is_int(value) or value < 1:
        raise invalid(name, "a strictly positive int", value)
    return value


def non_negative_int(name, value):
    """Returns `value` if it is an int >= 0 (not a bool); raises otherwise."""
    if not _is_int(value) or value < 0:
        raise invalid(name, "a non-negative int", value)
    return value


def int_in_range(name, value, low, high):
    """Returns `value` if it is an int in [low, high] (not a bool); raises otherwise."""
    if not _is_int(value) or not low <= value <= high:
        raise invalid(name, f"an int in [{low}, {high}]", value)
    return value


def number_in_range(name, value, low=None, high=None, include_low=True, include_high=True):
    """Returns `value` as a float if it is a number within the bounds; raises otherwise.

    Args:
        name: str. The argument.
        value: the value to check; bools and NaN are rejected.
        low: number or None. Lower bound; `None`: none. Defaults to `None`.
        high: number or None. Upper bound; `None`: none. Defaults to `None`.
        include_low: bool. Whether `low` itself is allowed. Defaults to `True`.
        include_high: bool. Whether `high` itself is allowed. Defaults to `True`.
    """
    valid = _is_number(value) and not math.isnan(value)
    if valid and low is not None:
        valid = value >= low if include_low else value > low
    if valid and high is not None:
        valid = value <= high if include_high else value < high
    if not valid:
        if low is not None and high is not None:
            opening, closing = "[" if include_low else "(", "]" if include_high else ")"
            expected = f"a number in {opening}{low}, {high}{closing}"
        elif low is not None:
            expected = f"a number {'>=' if include_low else '>'} {low}"
        else:
            expected = f"a number {'<=' if include_high else '<'} {high}"
        raise invalid(name, expected, value)
    return float(value)


def positive_number(name, value):
    """Returns `value` as a float if it is a number > 0; raises otherwise."""
    return number_in_range(name, value, low=0, include_low=False)


def in_unit_interval(name, value):
    """Returns `value` as a float if it is in [0, 1]; raises otherwise."""
    return number_in_range(name, value, 0, 1)


def one_of(name, value, choices):
    """Returns `value` if it is one of `choices`; raises otherwise."""
    if value not in choices:
        raise invalid(name, f"one of {tuple(choices)}", value)
    return value


def size_2d(name, value):
    """Returns `value` as a (height, width) tuple of two ints >= 1; raises otherwise."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(not _is_int(v) or v < 1 for v in value)
    ):
        raise invalid(name, "two strictly positive ints (height, width)", value)
    return tuple(value)


def positive_ints(name, values, length=None):
    """Returns `values` as a tuple of Python ints >= 1; raises otherwise.

    Args:
        name: str. The argument.
        values: the sequence to check.
        length: int or None. The exact length required; `None`: any but 0.
            Defaults to `None`.
    """
    try:
        items = tuple(values)
    except TypeError:
        items = ()
    if (
        not items
        or (length is not None and len(items) != length)
        or any(not _is_int(v) or v < 1 for v in items)
    ):
        expected = (
            "a non-empty sequence of strictly positive ints"
            if length is None
            else f"{length} strictly positive ints"
        )
        raise invalid(name, expected, values)
    return tuple(int(v) for v in items)


def positive_numbers(name, values):
    """Returns `values` as a non-empty tuple of finite floats > 0; raises otherwise."""
    try:
        parsed = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        parsed = ()
    if not parsed or any(not math.isfinite(v) or v <= 0 for v in parsed):
        raise invalid(name, "a non-empty sequence of strictly positive numbers", values)
    return parsed


def ends_with(name, value, suffix):
    """Returns `value` if it is a file name (str) ending in `suffix`; raises otherwise."""
    if not isinstance(value, str) or not value.endswith(suffix):
        raise invalid(name, f"a file name ending in {suffix}", value)
    return value


def units_per_block(value):
    """The ResNet depth option: `None` (the architecture's own), or 4 ints >= 1 as a tuple.

    The one check of `units_per_block`, for the model and the training settings.
    """
    return None if value is None else positive_ints("units_per_block", value, length=4)
