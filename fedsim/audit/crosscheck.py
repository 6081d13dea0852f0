"""Several accountants on the same history, side by side, with their disagreement.

Disagreements are reported, not hidden (DESIGN.md), but only the ones that signal
a bug are flagged. The accountants are of three kinds:

- conservative (RDP): a valid upper bound, looser than the tight ones; 8-16 % above
  PLD/PRV on typical DP-SGD and DP-FedAvg histories is expected. That looseness is
  reported (``looseness``) with the tightest bound beside it, never flagged.
- tight (PRV, PLD): numerically tight upper bounds; they must agree with each other
  within :data:`TIGHT_AGREEMENT`.
- approximate (GDP): a CLT approximation that can under-estimate; shown for
  comparison, never taken as the tightest bound and never flagged.

Flagged (a ``problems`` entry): a conservative accountant below a tight one by more
than the numerical tolerance, or two tight accountants further apart than
:data:`TIGHT_AGREEMENT`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedsim.audit.accounting import Entry, EpsilonCache, is_heterogeneous
from fedsim.privacy import PrivacyError

#: Accountants whose epsilon is a numerically tight upper bound.
TIGHT = ("prv", "pld")
#: Accountants whose epsilon is a valid but looser upper bound.
CONSERVATIVE = ("rdp",)
#: Largest relative gap between two tight accountants that is not a problem.
TIGHT_AGREEMENT = 0.02
#: How far a conservative accountant may fall below a tight one (numerical noise):
#: PRV is computed with eps_error = 0.01 and PLD is discretised, so 2 x 0.01 absolute
#: plus 1 % relative.
CONSERVATIVE_TOLERANCE_ABS = 0.02
CONSERVATIVE_TOLERANCE_REL = 0.01

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
        tightest: The upper-bound accountant (conservative or tight, not GDP) with the
            smallest epsilon, or None when none gave a number.
        tightest_epsilon: Its epsilon.
        looseness: Upper-bound accountant -> relative excess over the tightest.
        problems: What signals a bug (see the module docstring); empty when none.
    """

    subject: str
    level: str
    client: int | None
    epsilon: dict[str, float | None]
    notes: dict[str, str]
    disagreement: float
    between: tuple[str, str] | None
    tightest: str | None = None
    tightest_epsilon: float | None = None
    looseness: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.problems)


def tightest_bound(values: Mapping[str, float | None]) -> tuple[str | None, float | None]:
    """The smallest epsilon among the upper-bound accountants (GDP excluded)."""
    bounds = {n: v for n, v in values.items() if v is not None and n in TIGHT + CONSERVATIVE}
    if not bounds:
        return None, None
    name = min(bounds, key=lambda n: bounds[n])
    return name, bounds[name]


def accountant_problems(values: Mapping[str, float | None]) -> tuple[str, ...]:
    """Disagreements that signal a bug, in words (see the module docstring)."""
    out = []
    tight = {n: v for n, v in values.items() if n in TIGHT and v is not None}
    for name in CONSERVATIVE:
        low = values.get(name)
        if low is None:
            continue
        for other, high in tight.items():
            if high - low > CONSERVATIVE_TOLERANCE_ABS + CONSERVATIVE_TOLERANCE_REL * high:
                out.append(
                    f"{name} ({low:.6g}) is below {other} ({high:.6g}): a conservative upper "
                    "bound under a tight one means one of them composed other events"
                )
    names = sorted(tight)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lo, hi = sorted((tight[a], tight[b]))
            gap, _ = relative_disagreement({a: lo, b: hi})
            if gap > TIGHT_AGREEMENT:
                out.append(
                    f"{a} ({tight[a]:.6g}) and {b} ({tight[b]:.6g}) are {gap:.1%} apart, more "
                    f"than the {TIGHT_AGREEMENT:.0%} two tight accountants may differ"
                )
    return tuple(out)


def _looseness(values: Mapping[str, float | None], tightest: float | None) -> dict[str, float]:
    if tightest is None:
        return {}
    out = {}
    for name, v in values.items():
        if v is None or name not in TIGHT + CONSERVATIVE:
            continue
        out[name] = 0.0 if v == tightest else (v - tightest) / tightest if tightest else math.inf
    return out


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
    tightest, tightest_eps = tightest_bound(values)
    return AccountantRow(
        subject=subject,
        level=level,
        client=client,
        epsilon=values,
        notes=notes,
        disagreement=disagreement,
        between=between,
        tightest=tightest,
        tightest_epsilon=tightest_eps,
        looseness=_looseness(values, tightest_eps),
        problems=accountant_problems(values),
    )
