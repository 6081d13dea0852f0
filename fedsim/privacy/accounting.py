"""`PrivacyAccounting`: the server's one owner of privacy.

It plans each client participation (`fedsim.privacy.plan`), tells the grid which
clients may still be sampled within `dp.max_epsilon`, says when the run must stop
for the budget, checks what clients report against its plan, records the
user-level releases a DP strategy makes (DP-FedAvg is given this object, as
Flower's DP wrappers take an accountant) and writes every line of the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fedsim.privacy.accountants import epsilon
from fedsim.privacy.events import PrivacyEvent
from fedsim.privacy.ledger import PrivacyLedger
from fedsim.privacy.plan import LocalPlan, scenario_plan

if TYPE_CHECKING:
    import numpy as np

    from fedsim.config import Scenario
    from fedsim.protocol import ClientOutcome


class RoundOutcomes(Protocol):
    """What `record` reads of a round's report (the grid's `RoundReport`).

    A protocol rather than the grid's class, so that privacy never imports the engine.
    """

    round: int
    outcomes: list[ClientOutcome]


class PrivacyAccounting:
    """Plan, budget, checks and ledger of one run's privacy.

    Args:
        scenario: the run's scenario (dp.* settings, population, rounds).
        ledger: the run's ledger (None with DP off: nothing is accounted).
        lines: ledger lines already in the file (a resumed run).
    """

    def __init__(self, scenario: Scenario, ledger: PrivacyLedger | None, lines: int = 0) -> None:
        self.scenario = scenario
        self.ledger = ledger
        self.lines = lines
        self.mismatches = 0
        self.shard_sizes: np.ndarray | None = None
        # The user-level mechanism of the strategy's releases (`use_releases`).
        self.release_noise: float | None = None
        self.release_rate: float | None = None
        self.release_sampling: str | None = None
        self._eligible: dict[int, tuple[int, bool]] = {}  # client -> (count, within budget)
        self._plans: dict[int, LocalPlan] = {}
        self.user_participations: dict[int, int] = {}
        for event in ledger.user_events if ledger is not None else []:
            for c in event.get("clients", []):
                self.user_participations[c] = self.user_participations.get(c, 0) + 1

    @classmethod
    def open(cls, scenario: Scenario, path: Path) -> PrivacyAccounting:
        """The run's accounting, with the ledger at `path` (read back when it has lines).

        Raises:
            ValueError: a corrupt ledger line.
        """
        dp = scenario.dp
        if dp.mode not in ("sample", "user"):
            return cls(scenario, None)
        if path.exists() and path.stat().st_size > 0:
            from fedsim.rundir import read_jsonl

            ledger = PrivacyLedger.load(path, delta=dp.delta, accountant=dp.accountant)
            return cls(scenario, ledger, lines=len(read_jsonl(path)))
        return cls(scenario, PrivacyLedger(path, delta=dp.delta, accountant=dp.accountant))

    # ------------------------------------------------------------ plan
    def set_shard_sizes(self, sizes: np.ndarray) -> None:
        """The clients' training shard sizes, which their plans depend on."""
        self.shard_sizes = sizes

    def plan(self, client: int) -> LocalPlan:
        """The DP-SGD plan of one participation of `client`."""
        if self.shard_sizes is None:
            raise RuntimeError("PrivacyAccounting.plan needs the shard sizes (set_shard_sizes)")
        size = int(self.shard_sizes[client])
        if size not in self._plans:
            self._plans[size] = scenario_plan(self.scenario, size)
        return self._plans[size]

    def planned_event(self, client: int) -> PrivacyEvent:
        """The event of a whole planned participation of `client`."""
        plan = self.plan(client)
        return plan.event(plan.steps)

    def check(self, client: int, event: PrivacyEvent) -> str | None:
        """What in a reported event departs from the plan, or None.

        The event is what the client's DP optimizer ran (clients/trainer.py,
        clients/vectorised.py), not a recomputation of the plan: a client configured
        otherwise than planned shows here.
        """
        plan = self.plan(client)
        problems = []
        for name in ("noise_multiplier", "sample_rate", "max_grad_norm", "delta"):
            got, want = getattr(event, name), getattr(plan, name)
            if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
                problems.append(f"{name} {got} != planned {want}")
        if event.steps > plan.steps:
            problems.append(f"steps {event.steps} > planned {plan.steps}")
        return "; ".join(problems) or None

    # ------------------------------------------------------------ budget
    def budget_filter(self) -> Callable[[], list[int]] | None:
        """The clients that may still be sampled (their next participation stays in
        budget), as a callable for the grid; None when every client may be.

        Sample level: projected epsilon after one more planned participation. User
        level with fixed-size sampling (accounted without amplification, per client):
        one more release the client takes part in. With Poisson sampling every
        release covers every client, so `stop_reason` checks the population instead.
        """
        sc = self.scenario
        if sc.dp.max_epsilon is None or self.ledger is None:
            return None
        if sc.dp.mode == "user" and sc.dp.client_sampling == "poisson":
            return None
        return lambda: [c for c in range(sc.population) if self._within_budget(c)]

    def _within_budget(self, client: int) -> bool:
        sc, ledger = self.scenario, self.ledger
        if ledger is None or sc.dp.max_epsilon is None:  # budget_filter only asks under DP
            raise RuntimeError("budget check without a ledger or dp.max_epsilon")
        sample = sc.dp.mode == "sample"
        n = ledger.participations(client) if sample else self.user_participations.get(client, 0)
        hit = self._eligible.get(client)
        if hit is not None and hit[0] == n:
            return hit[1]
        if sample:
            eps = ledger.projected_epsilon(client, self.planned_event(client))
        else:
            eps = epsilon(
                noise_multiplier=self._release_noise(),
                sample_rate=1.0,
                steps=n + 1,
                delta=sc.dp.delta,
                accountant=sc.dp.accountant,
            )
        ok = eps <= sc.dp.max_epsilon
        self._eligible[client] = (n, ok)
        return ok

    def stop_reason(self, next_round: int, available: Callable[[], Sequence[int]]) -> str | None:
        """Why the run must stop before `next_round` (budget exhausted), or None.

        Args:
            next_round: the round about to start.
            available: the clients the grid may sample now (after `budget_filter`).
        """
        sc, ledger = self.scenario, self.ledger
        budget = sc.dp.max_epsilon
        if budget is None or ledger is None:
            return None
        if self.release_sampling == "poisson":
            eps = ledger.projected_user_epsilon(
                noise_multiplier=self._release_noise(), sample_rate=float(self.release_rate or 0)
            )
            if eps > budget:
                return (
                    f"privacy budget reached: one more user-level release would bring "
                    f"epsilon to {eps:.3f} > dp.max_epsilon = {budget:g}; stopped before "
                    f"round {next_round}"
                )
            return None
        need, left = sc.clients_per_round, len(available())
        if left < need:
            return (
                f"privacy budget reached: only {left} client(s) can take part again "
                f"without exceeding dp.max_epsilon = {budget:g}, {need} needed per round; "
                f"stopped before round {next_round}"
            )
        return None

    # ------------------------------------------------------------ recording
    def record(self, report: RoundOutcomes) -> None:
        """Enter every privacy event the clients reported in a round, checked against
        the plan; a client whose worker was lost mid-round is charged its plan."""
        if self.ledger is None:
            return
        for o in report.outcomes:
            if o.privacy is None and o.error is not None and o.error.startswith("cohort failed"):
                if self.scenario.dp.mode != "sample":
                    continue
                # The worker was lost mid-round: how far this client trained is
                # unknown, so it is charged its whole planned participation (an upper
                # bound).
                plan = self.plan(o.client)
                o.privacy = plan.event(plan.steps)
                o.error += " (privacy charged as the planned participation: an upper bound)"
            if o.privacy is None:
                continue  # dropped before training
            status = "trained"
            if o.error is not None:
                status = "late" if o.extra.get("late") else "failed"
            self._record_one(report.round, o.client, o.privacy, status, o.error)

    def _record_one(
        self, rnd: int, client: int, event: PrivacyEvent, status: str, error: str | None
    ) -> None:
        if self.ledger is None:  # record only charges under DP
            raise RuntimeError("a privacy event to record without a ledger (dp.mode = 'off')")
        extra: dict[str, Any] = {}
        problem = self.check(client, event)
        if problem:
            extra["mismatch"] = problem
            self.mismatches += 1
        if error is not None:
            extra["error"] = error
        self.lines += 1
        self.ledger.record(round=rnd, client=client, event=event, status=status, **extra)

    def use_releases(self, *, noise_multiplier: float, sample_rate: float, sampling: str) -> None:
        """Declare the user-level mechanism a strategy releases with (budget checks)."""
        self.release_noise = float(noise_multiplier)
        self.release_rate = float(sample_rate)
        self.release_sampling = sampling

    def _release_noise(self) -> float:
        if self.release_noise is None:
            raise RuntimeError("user-level budget checks need the strategy's `use_releases`")
        return self.release_noise

    def record_release(
        self,
        *,
        round: int,  # shadows the builtin to match the ledger's field name
        noise_multiplier: float,
        sample_rate: float,
        clip_norm: float,
        sampling: str,
        clients: Sequence[int],
        **extra: Any,
    ) -> None:
        """Enter one user-level release (one line charging its clients or everyone)."""
        if self.ledger is None:
            return
        self.ledger.record_user(
            round=round,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            clip_norm=clip_norm,
            sampling=sampling,
            clients=clients,
            **extra,
        )
        self.lines += 1
        for c in clients:
            self.user_participations[c] = self.user_participations.get(c, 0) + 1

    # ------------------------------------------------------------ reading
    def epsilon_summary(self) -> dict[str, float] | None:
        """Per-client epsilon min/median/max over the population, at the scenario's level."""
        if self.ledger is None:
            return None
        return self.ledger.level_summary(self.scenario.population, self.scenario.dp.mode)

    def epsilon_row(self) -> dict[str, Any]:
        """The epsilon columns of a metrics line."""
        s = self.epsilon_summary()
        if s is None:
            return {"epsilon_min": None, "epsilon_median": None, "epsilon_max": None}
        return {"epsilon_min": s["min"], "epsilon_median": s["median"], "epsilon_max": s["max"]}

    def flush(self) -> None:
        """Make the ledger's lines durable (after each round)."""
        if self.ledger is not None:
            self.ledger.flush()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
