"""Argument checks shared by the accountants and the ledger.

Each check raises `PrivacyError` naming the argument, the bad value and the allowed
range. They are explicit checks, not asserts, so they survive ``python -O``.
"""

from __future__ import annotations

import math
import numbers

from fedsim.privacy.errors import PrivacyError


def is_real(value: object) -> bool:
    """True for a real number that is not a bool (``True`` as a noise level is a bug)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integral(value: object) -> bool:
    """True for an integer (numpy ones included) that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: object, *, name: str, minimum: int = 0) -> int:
    """Return `value` as an int if it is an integer >= `minimum`.

    Raises:
        PrivacyError: otherwise.
    """
    if not is_integral(value) or value < minimum:  # type: ignore[operator]
        raise PrivacyError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_positive(value: object, *, name: str) -> float:
    """Return `value` as a float if it is a finite number > 0.

    Raises:
        PrivacyError: otherwise.
    """
    if not is_real(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type,operator]
        raise PrivacyError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_noise_multiplier(value: object, *, name: str = "noise_multiplier") -> float:
    """Return `value` as a float if it is a finite number >= 0.

    Raises:
        PrivacyError: otherwise.
    """
    if not is_real(value) or not math.isfinite(value) or value < 0:  # type: ignore[arg-type,operator]
        raise PrivacyError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_sample_rate(value: object, *, name: str = "sample_rate") -> float:
    """Return `value` as a float if ``0 < value <= 1``.

    Raises:
        PrivacyError: otherwise.
    """
    if not is_real(value) or not 0.0 < value <= 1.0:  # type: ignore[operator]
        raise PrivacyError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_steps(value: object, *, name: str = "steps") -> int:
    """Return `value` as an int if it is an integer >= 0.

    Raises:
        PrivacyError: otherwise.
    """
    return check_int(value, name=name, minimum=0)


def check_delta(value: object, *, name: str = "delta") -> float:
    """Return `value` as a float if ``0 < value < 1``.

    Raises:
        PrivacyError: otherwise.
    """
    if not is_real(value) or not 0.0 < value < 1.0:  # type: ignore[operator]
        raise PrivacyError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)  # type: ignore[arg-type]
