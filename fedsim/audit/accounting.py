"""Epsilons recomputed from ledger events, by accountant, cached by history.

Nothing in the audit reads a stored epsilon to report it: every number comes from
:class:`EpsilonCache` over the (noise_multiplier, sample_rate, steps) events of the
ledger lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from fedsim.audit.errors import AuditInputError
from fedsim.audit.inputs import PLD_INSTALL_HINT
from fedsim.privacy import epsilon_of_history

#: One accounting entry: (noise_multiplier, sample_rate, steps), Opacus' history format.
Entry = tuple[float, float, int]

#: A history with equal (z, q) merged, zero-step entries dropped, sorted: a cache key.
HistoryKey = tuple[Entry, ...]


def history_key(history: Iterable[Entry]) -> HistoryKey:
    """Merge entries with equal (z, q) and drop zero-step ones (composition commutes)."""
    merged: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        if steps:
            merged[(float(z), float(q))] = merged.get((float(z), float(q)), 0) + int(steps)
    return tuple(sorted((z, q, n) for (z, q), n in merged.items()))


def is_heterogeneous(history: Iterable[Entry]) -> bool:
    """True when the history mixes several (noise_multiplier, sample_rate) pairs."""
    return len(history_key(history)) > 1


class EpsilonCache:
    """Epsilons of histories under named accountants, cached by merged history.

    Warnings the accountant libraries raise (e.g. numerical overflow inside PRV) are
    collected in :attr:`notes`, once each, so the audit can show them instead of
    letting them scroll past on stderr.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, float, HistoryKey], float] = {}
        self.notes: list[str] = []

    def epsilon(self, history: Iterable[Entry], *, delta: float, accountant: str) -> float:
        """Epsilon of the composed history.

        Raises:
            PrivacyError: an accountant that cannot compose this history.
            AuditInputError: 'pld' without dp-accounting installed.
        """
        key = (accountant, float(delta), history_key(history))
        cached = self._values.get(key)
        if cached is not None:
            return cached
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = epsilon_of_history(list(key[2]), delta=delta, accountant=accountant)
            except ImportError as exc:
                raise AuditInputError(
                    f"accountant {accountant!r} cannot run: {exc}; {PLD_INSTALL_HINT}"
                ) from exc
        for w in caught:
            note = f"{accountant}: {w.category.__name__}: {w.message}"
            if note not in self.notes:
                self.notes.append(note)
        self._values[key] = value
        return value
