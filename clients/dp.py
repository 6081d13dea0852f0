"""The client side's view of a participation's DP plan (`fedsim.privacy.plan`).

The plan itself is decided in one place, `fedsim.privacy.plan`; this module adapts a
scenario to it and adds what only the client needs: how many epochs *this*
participation trains (a seeded draw with train.min_epochs).
"""

from __future__ import annotations

from fedsim.config import Scenario
from fedsim.privacy import plan as _plan
from fedsim.privacy.plan import LocalPlan
from fedsim.privacy.plan import scenario_plan as plan_participation

__all__ = ["LocalPlan", "local_epochs", "local_steps", "plan_participation"]


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
    return _plan.local_steps(
        shard_size=shard_size,
        batch_size=scenario.train.batch_size,
        epochs=local_epochs(scenario, client, round),
        max_steps=scenario.train.max_steps,
    )
