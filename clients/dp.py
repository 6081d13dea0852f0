"""The client side's view of a participation's DP plan (`fedsim.privacy.plan`).

The plan itself is decided in one place, `fedsim.privacy.plan`; this module adapts a
scenario to it and adds what only the client needs: how many epochs *this*
participation trains (a seeded draw with train.min_epochs), and `SpentPrivacy`,
the record of what the DP optimizer actually ran, which the client reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.config import Scenario
from fedsim.privacy import plan as _plan
from fedsim.privacy.events import PrivacyEvent
from fedsim.privacy.plan import LocalPlan
from fedsim.privacy.plan import scenario_plan as plan_participation

__all__ = ["LocalPlan", "SpentPrivacy", "local_epochs", "local_steps", "plan_participation"]


@dataclass
class SpentPrivacy:
    """The DP-SGD mechanism one participation ran, counted as its steps run.

    An engine starts it with the values it configured and notes every noisy step
    with the noise multiplier and clipping norm that step applied; the event a
    client reports is this record, so a client that ran otherwise than planned is
    seen by the server's check (`PrivacyAccounting.check`) instead of hidden by a
    recomputation of the plan.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float  # the Poisson rate the batch sampler drew with
    delta: float
    steps: int = 0

    def step(self, noise_multiplier: float, max_grad_norm: float) -> None:
        """One noisy step ran with these values.

        Raises:
            RuntimeError: values that differ from earlier steps of the participation
                (one event cannot report a mechanism that changed midway).
        """
        z, c = float(noise_multiplier), float(max_grad_norm)
        if self.steps and (z, c) != (self.noise_multiplier, self.max_grad_norm):
            raise RuntimeError(
                f"DP-SGD noise/clip changed within a participation: ({z}, {c}) after "
                f"{self.steps} step(s) at ({self.noise_multiplier}, {self.max_grad_norm})"
            )
        self.noise_multiplier, self.max_grad_norm = z, c
        self.steps += 1

    def event(self) -> PrivacyEvent:
        """The privacy event of the steps run so far (the client's report)."""
        return PrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            max_grad_norm=self.max_grad_norm,
            delta=self.delta,
        )


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
