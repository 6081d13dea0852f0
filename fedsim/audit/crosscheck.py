"""Several accountants on the same history, side by side, with their disagreement.

Disagreements are reported, not hidden (DESIGN.md): RDP is a looser upper bound
than PRV and PLD; GDP is an approximation that can under-estimate and refuses
histories that mix several (noise_multiplier, sample_rate) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedsim.audit.accounting import Entry, EpsilonCache, is_heterogeneous
from fedsim.privacy import PrivacyError

#: Relative disagreement between accountants above which the audit warns.
DISAGREEMENT_WARNING = 0.10

HETEROGENEOUS = "n/a (heterogeneous)"


@dataclass(frozen=True)
class AccountantRow:
    """One history computed by several accountants, side by side.

    Attributes:
        subject: What the history is ("worst client", "median client", "population").
        level: "sample" or "user".
        client: The client id for sample-level rows, else None.
        epsilon: Accountant -> epsilon; None where it could not be computed.
        notes: Accountant -> why there is no number (e.g. gdp on a heterogeneous history).
        disagreement: Largest relative disagreement, (max - min) / min, over the numbers.
        between: The accountants giving that min and max, or None with < 2 numbers.
    """

    subject: str
    level: str
    client: int | None
    epsilon: dict[str, float | None]
    notes: dict[str, str]
    disagreement: float
    between: tuple[str, str] | None

    @property
    def flagged(self) -> bool:
        return self.disagreement > DISAGREEMENT_WARNING


def relative_disagreement(
    values: Mapping[str, float | None],
) -> tuple[float, tuple[str, str] | None]:
    """Largest relative disagreement among accountants: (max - min) / min.

    Returns ``(0.0, None)`` with fewer than two numbers; ``inf`` when the smallest is 0
    and another is positive, or one is infinite and another is not.
    """
    numbers = {name: v for name, v in values.items() if v is not None}
    if len(numbers) < 2:
        return 0.0, None
    low = min(numbers, key=lambda n: numbers[n])
    high = max(numbers, key=lambda n: numbers[n])
    lo, hi = numbers[low], numbers[high]
    if hi == lo:
        return 0.0, (low, high)
    if lo == 0.0 or math.isinf(hi):
        return math.inf, (low, high)
    return (hi - lo) / lo, (low, high)


def compare_accountants(
    history: Sequence[Entry],
    *,
    subject: str,
    level: str,
    client: int | None,
    accountants: Sequence[str],
    delta: float,
    cache: EpsilonCache,
) -> AccountantRow:
    """Compute ``history`` under each accountant; a failure is a note, not a crash."""
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in accountants:
        if name == "gdp" and is_heterogeneous(history):
            values[name], notes[name] = None, HETEROGENEOUS
            continue
        try:
            values[name] = cache.epsilon(history, delta=delta, accountant=name)
        except PrivacyError as exc:
            values[name], notes[name] = None, f"error: {exc}"
    disagreement, between = relative_disagreement(values)
    return AccountantRow(
        subject=subject,
        level=level,
        client=client,
        epsilon=values,
        notes=notes,
        disagreement=disagreement,
        between=between,
    )
