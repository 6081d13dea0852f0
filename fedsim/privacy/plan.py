"""The DP-SGD plan of one client participation, from primitive arguments.

The one place that decides how many local steps a participation may take, at what
Poisson sample rate and with what noise. The server's `PrivacyAccounting` plans
with it and checks what clients report against it; the client side follows the
same plan (`fedsim.clients.dp` adapts a scenario to these arguments). The
`target_epsilon` rule (`worst_case_noise`) is also the one DP-FedAvg's user-level
releases are given (`fedsim.strategies.factory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from fedsim.privacy.events import PrivacyEvent

if TYPE_CHECKING:
    from fedsim.config import Scenario


@dataclass(frozen=True)
class LocalPlan:
    """Steps, Poisson sample rate and noise of one participation of one client."""

    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float

    def event(self, steps: int) -> PrivacyEvent:
        """The privacy event of `steps` taken as this plan says (the server's
        expectation; a client reports what its optimizer ran)."""
        return PrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=int(steps),
            max_grad_norm=self.max_grad_norm,
            delta=self.delta,
        )


def local_steps(*, shard_size: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Local steps for a shard: epochs x ceil(n / batch), capped by `max_steps`."""
    steps = epochs * max(1, math.ceil(shard_size / batch_size))
    return steps if max_steps is None else min(steps, max_steps)


def participation_plan(
    *,
    shard_size: int,
    batch_size: int,
    epochs: int,
    max_steps: int | None,
    rounds: int,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    max_grad_norm: float,
    delta: float,
    accountant: str,
) -> LocalPlan:
    """The DP-SGD plan for a client whose training shard has `shard_size` samples.

    The sample rate is batch_size / shard_size of *this* client (Poisson sampling
    over its own shard). Without a `noise_multiplier`, the noise is the smallest
    that keeps the client within `target_epsilon` even if it is sampled in every
    one of the `rounds` (`worst_case_noise`).
    """
    steps = local_steps(
        shard_size=shard_size, batch_size=batch_size, epochs=epochs, max_steps=max_steps
    )
    q = min(1.0, batch_size / max(1, shard_size))
    z = worst_case_noise(
        noise_multiplier=noise_multiplier,
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=q,
        steps_per_round=steps,
        rounds=rounds,
        accountant=accountant,
    )
    return LocalPlan(
        steps=steps, sample_rate=q, noise_multiplier=z, max_grad_norm=max_grad_norm, delta=delta
    )


def scenario_plan(scenario: Scenario, shard_size: int) -> LocalPlan:
    """`participation_plan` with the scenario's training and DP settings."""
    tr, dp = scenario.train, scenario.dp
    return participation_plan(
        shard_size=shard_size,
        batch_size=tr.batch_size,
        epochs=tr.epochs,
        max_steps=tr.max_steps,
        rounds=scenario.rounds,
        noise_multiplier=dp.noise_multiplier,
        target_epsilon=dp.target_epsilon,
        max_grad_norm=dp.max_grad_norm,
        delta=dp.delta,
        accountant=dp.accountant,
    )


def worst_case_noise(
    *,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float,
    sample_rate: float,
    steps_per_round: int,
    rounds: int,
    accountant: str,
) -> float:
    """The noise multiplier of a subject's releases: the given `noise_multiplier`, or
    the smallest that keeps it within `target_epsilon` if it takes part in every one
    of the `rounds`, `steps_per_round` releases at `sample_rate` each.

    Every round is the worst case, and the one a guarantee can promise: a client
    cannot know in advance how often the server will pick it. DP-SGD clients take
    their local steps per round; a user-level (DP-FedAvg) release is one per round.
    """
    if noise_multiplier is not None:
        return float(noise_multiplier)
    return _noise_for_target(
        float(target_epsilon or 0.0), delta, sample_rate, steps_per_round * rounds, accountant
    )


@lru_cache(maxsize=4096)
def _noise_for_target(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    from fedsim.privacy.accountants import noise_multiplier_for

    return noise_multiplier_for(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
    )
