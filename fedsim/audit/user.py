"""User level (DP-FedAvg): the population's epsilon and each client's.

Rule: each user-level line is one release of the whole population (a Gaussian sum
of clipped client updates, amplified by Poisson client sampling at rate q, or not
amplified with fixed-size cohorts); the population's user-level epsilon composes
all of them. Per client, fedsim's ledger counts every release under Poisson
sampling and only the releases a client took part in under fixed-size sampling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsim.audit.accounting import Entry, EpsilonCache
from fedsim.audit.inputs import LedgerLine
from fedsim.audit.stats import Spread, spread_with_zeros

USER_RULE_SHORT = "composition of all user-level releases"

USER_RULE = (
    "sequential composition of every user-level release (one per round), each a "
    "subsampled Gaussian mechanism over the whole population"
)


@dataclass(frozen=True)
class RealisedRate:
    """Realised vs accounted client sampling of the Poisson user-level releases.

    Under Poisson sampling the number of clients sampled in a round is
    Binomial(population, q); summed over rounds its mean and variance are known, so
    ``z_score`` says how many standard deviations the realised total is off.
    """

    accounted: float
    observed: float
    releases: int
    z_score: float
    band_sigmas: float

    @property
    def within_band(self) -> bool:
        return abs(self.z_score) <= self.band_sigmas


@dataclass(frozen=True)
class UserLevel:
    """Recomputed user-level (DP-FedAvg) accounting of the population.

    Attributes:
        epsilon: Composition of every user-level release, as the ledger accounted it.
        epsilon_without_amplification: Composition with q = 1 for releases whose
            clients were sampled fixed-size but accounted with q < 1 (the honest
            bound then); None when no release needs it.
        per_client: Each client's user-level epsilon as fedsim's ledger defines it:
            with any Poisson release every client is covered by every release (the
            population value); with fixed-size sampling only the releases a client
            took part in count (q = 1). None when that cannot be recomputed (fixed
            releases whose line has no "clients" list).
        per_client_seen: For fixed-size sampling, the epsilon of every client named
            in some release (others have 0); empty otherwise.
    """

    accountant: str
    delta: float
    releases: int
    epsilon: float
    epsilon_without_amplification: float | None
    poisson_releases: int
    fixed_releases: int
    realised: RealisedRate | None
    per_client: Spread | None = None
    per_client_seen: dict[int, float] = field(default_factory=dict)

    @property
    def guarantee(self) -> float:
        """The population's user-level epsilon, without amplification that did not happen."""
        if self.epsilon_without_amplification is not None:
            return self.epsilon_without_amplification
        return self.epsilon


#: A Poisson user-level run whose realised sampling is further off than this many
#: binomial standard deviations did not sample as accounted (false alarm ~6e-5).
BAND_SIGMAS = 4.0


def user_entries(lines: Iterable[LedgerLine], *, unamplify_fixed: bool = False) -> list[Entry]:
    """(z, q, steps) of user-level lines; optionally q = 1 for fixed-size sampling."""
    out = []
    for line in lines:
        r = line.record
        q = float(r["sample_rate"])
        if unamplify_fixed and r["sampling"] == "fixed":
            q = 1.0
        out.append((float(r["noise_multiplier"]), q, int(r["steps"])))
    return out


def realised_rate(lines: Sequence[LedgerLine], population: int) -> RealisedRate | None:
    """Compare clients sampled with the accounted rate over the Poisson releases."""
    poisson = [line.record for line in lines if line.record["sampling"] == "poisson"]
    if not poisson or population <= 0:
        return None
    qs = np.array([float(r["sample_rate"]) for r in poisson])
    sampled = np.array([int(r["clients_sampled"]) for r in poisson], dtype=np.float64)
    expected = float(qs.sum() * population)
    variance = float((qs * (1.0 - qs)).sum() * population)
    total = float(sampled.sum())
    if variance > 0:
        z = (total - expected) / math.sqrt(variance)
    else:  # q = 1 everywhere: every client must be sampled, exactly
        z = 0.0 if total == expected else math.copysign(math.inf, total - expected)
    return RealisedRate(
        accounted=float(qs.mean()),
        observed=float((sampled / population).mean()),
        releases=len(poisson),
        z_score=z,
        band_sigmas=BAND_SIGMAS,
    )


def user_level(
    lines: Sequence[LedgerLine],
    *,
    population: int,
    accountant: str,
    delta: float,
    cache: EpsilonCache,
) -> UserLevel | None:
    """Compose every user-level release; None when the ledger has none.

    Raises:
        PrivacyError: the accountant cannot compose the releases.
    """
    if not lines:
        return None
    eps = cache.epsilon(user_entries(lines), delta=delta, accountant=accountant)
    needs_honest = any(
        r["sampling"] == "fixed" and float(r["sample_rate"]) < 1.0
        for r in (line.record for line in lines)
    )
    honest = (
        cache.epsilon(user_entries(lines, unamplify_fixed=True), delta=delta, accountant=accountant)
        if needs_honest
        else None
    )
    fixed = sum(1 for line in lines if line.record["sampling"] == "fixed")
    per_client, seen = _user_per_client(
        lines, population, honest if honest is not None else eps, accountant, delta, cache
    )
    return UserLevel(
        accountant=accountant,
        delta=delta,
        releases=len(lines),
        epsilon=eps,
        epsilon_without_amplification=honest,
        poisson_releases=len(lines) - fixed,
        fixed_releases=fixed,
        realised=realised_rate(lines, population),
        per_client=per_client,
        per_client_seen=seen,
    )


def _user_per_client(
    lines: Sequence[LedgerLine],
    population: int,
    population_epsilon: float,
    accountant: str,
    delta: float,
    cache: EpsilonCache,
) -> tuple[Spread | None, dict[int, float]]:
    """Per-client user-level epsilon, with the ledger's rule (see :class:`UserLevel`)."""
    if any(line.record["sampling"] == "poisson" for line in lines):
        # Poisson sampling: every release may include any client, so all are covered.
        value = population_epsilon
        return Spread(min=value, median=value, max=value), {}
    if any("clients" not in line.record for line in lines):
        return None, {}
    histories: dict[int, list[Entry]] = {}
    for entry, line in zip(user_entries(lines, unamplify_fixed=True), lines, strict=True):
        for client in line.record["clients"]:
            histories.setdefault(int(client), []).append(entry)
    seen = {
        c: cache.epsilon(h, delta=delta, accountant=accountant)
        for c, h in sorted(histories.items())
    }
    outside = sum(1 for c in seen if c >= population)
    unseen = population + outside - len(seen)
    return spread_with_zeros(list(seen.values()), unseen), seen
