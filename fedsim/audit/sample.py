"""Sample level (DP-SGD): every client's epsilon, and the population's.

Rule (PRIVACY.md): a client's epsilon composes every DP-SGD step of every line it
has (failed participations included: they spent privacy before failing). Shards
of different clients are disjoint, so each example belongs to exactly one client
and the population's example-level guarantee is the maximum over clients
(parallel composition). Clients never sampled have epsilon 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedsim.audit.accounting import Entry, EpsilonCache
from fedsim.audit.inputs import LedgerLine
from fedsim.audit.stats import Histogram, Spread, histogram_with_zeros, spread_with_zeros

SAMPLE_RULE = (
    "max over clients: shards of different clients are disjoint, so one example's "
    "data is used only by its own client and each client's epsilon composes only the "
    "rounds it took part in (parallel composition across clients, sequential within one)"
)

#: One-line forms of the rules, for tables.
SAMPLE_RULE_SHORT = "max over clients (parallel composition over disjoint shards)"


@dataclass(frozen=True)
class ClientEpsilon:
    """A client's recomputed epsilon and how many ledger lines it has."""

    client: int
    epsilon: float
    participations: int


@dataclass(frozen=True)
class SampleLevel:
    """Recomputed example-level accounting of the whole population.

    Attributes:
        accountant: Accountant of every number here (the scenario's; rdp if it refuses).
        delta: Delta of every epsilon here (the scenario's).
        population: Clients audited: the scenario's population, plus any client id
            outside it that the ledger names (a violation, but never dropped).
        clients: Every client with at least one line, ascending id.
        epsilon: Spread of per-client epsilon over the whole population.
        participations: Spread of per-client line counts over the whole population.
        histogram: Per-client epsilon histogram (its total is ``population``).
        worst: The client with the largest epsilon (smallest id on ties).
        median: The client whose epsilon is nearest the median (smallest id on ties).
    """

    accountant: str
    delta: float
    population: int
    clients: list[ClientEpsilon]
    epsilon: Spread
    participations: Spread
    histogram: Histogram
    worst: ClientEpsilon
    median: ClientEpsilon

    @property
    def guarantee(self) -> float:
        """The population's example-level epsilon: the max over clients."""
        return self.epsilon.max

    @property
    def total_participations(self) -> int:
        return sum(c.participations for c in self.clients)


def client_histories(lines: Iterable[LedgerLine]) -> dict[int, list[Entry]]:
    """Each client's (z, q, steps) entries, in line order (failed lines included)."""
    out: dict[int, list[Entry]] = {}
    for line in lines:
        r = line.record
        entry = (float(r["noise_multiplier"]), float(r["sample_rate"]), int(r["steps"]))
        out.setdefault(int(r["client"]), []).append(entry)
    return out


def sample_level(
    lines: Sequence[LedgerLine],
    *,
    population: int,
    accountant: str,
    delta: float,
    cache: EpsilonCache,
) -> SampleLevel:
    """Recompute every client's epsilon and the population's spread and histogram.

    Raises:
        PrivacyError: the accountant cannot compose some client's history.
        AuditInputError: 'pld' without dp-accounting.
    """
    histories = client_histories(lines)
    clients = [
        ClientEpsilon(
            client=c,
            epsilon=cache.epsilon(histories[c], delta=delta, accountant=accountant),
            participations=len(histories[c]),
        )
        for c in sorted(histories)
    ]
    outside = sum(1 for c in histories if c >= population)
    audited = population + outside
    unseen = audited - len(clients)
    eps = [c.epsilon for c in clients]
    worst = _worst(clients)
    spread = spread_with_zeros(eps, unseen)
    return SampleLevel(
        accountant=accountant,
        delta=delta,
        population=audited,
        clients=clients,
        epsilon=spread,
        participations=spread_with_zeros([c.participations for c in clients], unseen),
        histogram=histogram_with_zeros(eps, unseen),
        worst=worst,
        median=_nearest(clients, spread.median, population),
    )


def _first_unseen(clients: Sequence[ClientEpsilon], population: int) -> int | None:
    seen = {c.client for c in clients}
    return next((cid for cid in range(population) if cid not in seen), None)


def _worst(clients: Sequence[ClientEpsilon]) -> ClientEpsilon:
    if clients:
        return max(clients, key=lambda c: (c.epsilon, -c.client))
    return ClientEpsilon(client=0, epsilon=0.0, participations=0)


def _nearest(clients: Sequence[ClientEpsilon], value: float, population: int) -> ClientEpsilon:
    """The client whose epsilon is nearest ``value``; a never-sampled one stands for 0."""
    candidates = list(clients)
    unseen = _first_unseen(clients, population)
    if unseen is not None:
        candidates.append(ClientEpsilon(client=unseen, epsilon=0.0, participations=0))
    if not candidates:
        return ClientEpsilon(client=0, epsilon=0.0, participations=0)

    def distance(c: ClientEpsilon) -> tuple[float, int]:
        # inf - inf is nan: an infinite median matches an infinite epsilon exactly.
        gap = 0.0 if c.epsilon == value else abs(c.epsilon - value)
        return gap, c.client

    return min(candidates, key=distance)
