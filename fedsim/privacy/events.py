"""`PrivacyEvent`: one participation's DP-SGD mechanism, the one type of plan and report.

The plan (`fedsim.privacy.plan.LocalPlan.event`) produces it, a client reports it
(what its DP optimizer ran, carried in its reply by `fedsim.protocol`), the server's
`PrivacyAccounting` checks one against the other and the ledger composes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedsim.privacy._checks import (
    check_delta,
    check_noise_multiplier,
    check_positive,
    check_sample_rate,
    check_steps,
)
from fedsim.privacy.accountants import HistoryEntry
from fedsim.privacy.errors import PrivacyError

#: The fields of an event, in the order a ledger line and a reply write them.
EVENT_KEYS: tuple[str, ...] = ("noise_multiplier", "sample_rate", "steps", "max_grad_norm", "delta")


@dataclass(frozen=True)
class PrivacyEvent:
    """A client's report of one participation: what its DP-SGD run spent.

    Attributes:
        noise_multiplier: Noise standard deviation / clipping norm, >= 0.
        sample_rate: Poisson sampling probability (batch size / shard size), in (0, 1].
        steps: Optimiser steps taken, >= 0.
        max_grad_norm: Per-example clipping norm, > 0 (recorded, not used in epsilon).
        delta: The delta the client was configured with, in (0, 1).

    Raises:
        PrivacyError: a field out of range (on construction).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float

    def __post_init__(self) -> None:
        # Normalise numpy scalars and ints to float/int so lines serialise identically.
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", check_steps(self.steps))
        object.__setattr__(
            self, "max_grad_norm", check_positive(self.max_grad_norm, name="max_grad_norm")
        )
        object.__setattr__(self, "delta", check_delta(self.delta))

    @property
    def entry(self) -> HistoryEntry:
        """``(noise_multiplier, sample_rate, steps)``, the opacus history format."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def fields(self) -> dict[str, float | int]:
        """The event as a ledger line and a reply write it (keys :data:`EVENT_KEYS`)."""
        return {key: getattr(self, key) for key in EVENT_KEYS}

    @classmethod
    def from_fields(cls, record: Mapping[str, Any]) -> PrivacyEvent:
        """The event a mapping with the keys :data:`EVENT_KEYS` holds (others ignored).

        Raises:
            PrivacyError: a missing key or a field out of range.
        """
        missing = [key for key in EVENT_KEYS if key not in record]
        if missing:
            raise PrivacyError(f"a privacy event misses field(s) {missing}")
        return cls(**{key: record[key] for key in EVENT_KEYS})
