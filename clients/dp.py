"""The DP-SGD plan of one client participation, shared by client and server.

The client follows this plan; the server recomputes it from the scenario and the
shard size to check what the client reports before it enters the ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from fedsim.config import Scenario


@dataclass(frozen=True)
class LocalPlan:
    """Steps, Poisson sample rate and noise of one participation of one client."""

    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float

    def event(self, steps: int) -> dict[str, float | int]:
        """The privacy event a client reports after taking `steps` of this plan."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": int(steps),
            "max_grad_norm": self.max_grad_norm,
            "delta": self.delta,
        }


def local_epochs(scenario: Scenario, client: int | None, round: int | None) -> int:
    """Epochs of one participation: train.epochs, or with train.min_epochs a seeded
    draw from {min_epochs, ..., epochs} per (round, client) (system heterogeneity)."""
    tr = scenario.train
    if tr.min_epochs is None or client is None or round is None:
        return tr.epochs
    from fedsim.seeding import numpy_rng

    return int(
        numpy_rng(scenario.seed, "epochs", round, client).integers(tr.min_epochs, tr.epochs + 1)
    )


def local_steps(
    scenario: Scenario, shard_size: int, client: int | None = None, round: int | None = None
) -> int:
    """Local steps for a shard: epochs x ceil(n / batch), capped by train.max_steps.

    Without (client, round) this is the most a participation can take (the plan the
    privacy accounting and its checks use); with them, that participation's steps.
    """
    per_epoch = max(1, math.ceil(shard_size / scenario.train.batch_size))
    steps = local_epochs(scenario, client, round) * per_epoch
    if scenario.train.max_steps is not None:
        steps = min(steps, scenario.train.max_steps)
    return steps


def plan_participation(scenario: Scenario, shard_size: int) -> LocalPlan:
    """The DP-SGD plan for a client whose training shard has `shard_size` samples.

    The sample rate is batch_size / shard_size of *this* client (Poisson sampling
    over its own shard). With `dp.target_epsilon`, the noise is the smallest that
    keeps the client within the target even if it is sampled in every round: a
    client cannot know in advance how often the server will pick it, and the worst
    case is the one a guarantee can promise.
    """
    dp = scenario.dp
    steps = local_steps(scenario, shard_size)
    q = min(1.0, scenario.train.batch_size / max(1, shard_size))
    if dp.noise_multiplier is not None:
        z = float(dp.noise_multiplier)
    else:
        z = _noise_for_target(
            float(dp.target_epsilon or 0.0), dp.delta, q, steps * scenario.rounds, dp.accountant
        )
    return LocalPlan(
        steps=steps,
        sample_rate=q,
        noise_multiplier=z,
        max_grad_norm=dp.max_grad_norm,
        delta=dp.delta,
    )


@lru_cache(maxsize=4096)
def _noise_for_target(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    from fedsim.privacy import noise_multiplier_for

    return noise_multiplier_for(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
    )
