"""Argument checks shared by the loaders and partitioners.

Each check raises `DataError` with the argument's name, the bad value and the allowed range, so a
mistyped scenario file fails with a message the user can act on.
"""

from __future__ import annotations

import numbers
from typing import Any

from fedsim.data.errors import DataError


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return `value` as an int, or raise `DataError` if it is not an integer >= `minimum`.

    Args:
        name: argument name used in the message.
        value: the value to check; bools are rejected (``True`` is not a client count).
        minimum: smallest allowed value, or None for no lower bound.

    Returns:
        The value as a Python int.

    Raises:
        DataError: if `value` is not an integer or is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DataError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: Any, *, minimum: int) -> int | None:
    """Like `check_int`, but None passes through (meaning "no limit").

    Args:
        name: argument name used in the message.
        value: None or an integer.
        minimum: smallest allowed integer value.

    Returns:
        None or the value as a Python int.

    Raises:
        DataError: if `value` is neither None nor an integer >= `minimum`.
    """
    if value is None:
        return None
    return check_int(name, value, minimum=minimum)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return `value` as a float, or raise `DataError` unless it is finite and > 0 (or >= 0).

    Args:
        name: argument name used in the message.
        value: the value to check.
        allow_zero: accept 0.0 as well.

    Returns:
        The value as a Python float.

    Raises:
        DataError: if `value` is not a real number in the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name} must be a number, got {value!r}")
    out = float(value)
    ok = out >= 0.0 if allow_zero else out > 0.0
    if not ok or out != out or out == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise DataError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


def check_fraction(name: str, value: Any) -> float:
    """Return `value` as a float strictly between 0 and 1, else raise `DataError`.

    Args:
        name: argument name used in the message.
        value: the value to check.

    Returns:
        The value as a Python float.

    Raises:
        DataError: if `value` is not a number with 0 < value < 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise DataError(f"{name} must be a number with 0 < {name} < 1, got {value!r}")
    return float(value)
