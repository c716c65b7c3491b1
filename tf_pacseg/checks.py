"""Argument checks shared by the library, with Keras-style messages.

Each check raises `ValueError("Invalid value for argument `x`. Expected ...
Received: x=...")` and returns the value (normalised where that helps), so
that a caller can write `crop_size = checks.crop_size(crop_size)`.
"""

import math


def _invalid(name, expected, value):
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name, value):
    """Returns `value` if it is an int >= 1 (not a bool); raises otherwise."""
    if not _is_int(value) or value < 1:
        raise _invalid(name, "a strictly positive int", value)
    return value


def non_negative_int(name, value):
    """Returns `value` if it is an int >= 0 (not a bool); raises otherwise."""
    if not _is_int(value) or value < 0:
        raise _invalid(name, "a non-negative int", value)
    return value


def int_in_range(name, value, low, high):
    """Returns `value` if it is an int in [low, high] (not a bool); raises otherwise."""
    if not _is_int(value) or not low <= value <= high:
        raise _invalid(name, f"an int in [{low}, {high}]", value)
    return value


def size_2d(name, value):
    """Returns `value` as a (height, width) tuple of two ints >= 1; raises otherwise."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(not _is_int(v) or v < 1 for v in value)
    ):
        raise _invalid(name, "two strictly positive ints (height, width)", value)
    return tuple(value)


def one_of(name, value, choices):
    """Returns `value` if it is one of `choices`; raises otherwise."""
    if value not in choices:
        raise _invalid(name, f"one of {tuple(choices)}", value)
    return value


def positive_numbers(name, values):
    """Returns `values` as a non-empty tuple of finite floats > 0; raises otherwise."""
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or any(not math.isfinite(v) or v <= 0 for v in numbers):
        raise _invalid(name, "a non-empty sequence of strictly positive numbers", values)
    return numbers


def in_unit_interval(name, value):
    """Returns `value` as a float if it is in [0, 1]; raises otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _invalid(name, "a number in [0, 1]", value)
    return float(value)
