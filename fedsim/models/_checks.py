"""Shared error type and argument checks for the model builders.

Kept apart from ``__init__`` so that each model file can import them without an import cycle
through the registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fedsim.errors import FedsimError


class ModelError(FedsimError, ValueError):
    """A model name, shape or option that cannot be built; the message says what is allowed."""

    bad_input = True


def positive_int(model: str, name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is an int > 0 (or >= 0 with ``allow_zero``), else raise ModelError.

    ``bool`` is refused although it subclasses ``int``: ``hidden=True`` is always a config
    mistake, never a request for a width of 1.
    """
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ModelError(
            f"model {model!r}: option {name}={value!r} is not allowed; "
            f"expected an integer >= {lowest}"
        )
    return value


def positive_int_list(model: str, name: str, value: Any) -> list[int]:
    """Return ``value`` as a non-empty list of ints > 0, else raise ModelError."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise ModelError(
            f"model {model!r}: option {name}={value!r} is not allowed; "
            f"expected a non-empty list of integers >= 1, e.g. [16, 32]"
        )
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ModelError(
                f"model {model!r}: option {name}={value!r} is not allowed; "
                f"entry {item!r} is not an integer >= 1"
            )
    return list(value)


def check_num_classes(model: str, num_classes: Any) -> int:
    """Return ``num_classes`` if it is an int >= 2, else raise ModelError.

    One class would make cross-entropy identically zero, so it is refused as a mistake.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(
            f"model {model!r}: num_classes={num_classes!r} is not allowed; expected an integer >= 2"
        )
    return num_classes


def check_input_shape(
    model: str, input_shape: Any, *, ndim: int | None, hint: str
) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints of length ``ndim`` (any if None).

    ``input_shape`` excludes the batch dimension. ``hint`` names the expected layout, e.g.
    ``"(channels, height, width)"``, so the error tells the caller what to pass.
    """
    ok = (
        isinstance(input_shape, Sequence)
        and not isinstance(input_shape, str | bytes)
        and len(input_shape) > 0
        and (ndim is None or len(input_shape) == ndim)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    )
    if not ok:
        raise ModelError(
            f"model {model!r}: input_shape={input_shape!r} is not allowed; "
            f"expected {hint} of positive integers, without the batch dimension"
        )
    return tuple(input_shape)


def flat_size(input_shape: tuple[int, ...]) -> int:
    """Number of features once an input of ``input_shape`` is flattened."""
    return math.prod(input_shape)
