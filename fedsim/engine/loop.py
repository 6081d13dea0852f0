"""`RoundLoop`: the server's rounds as a template method with observer hooks.

Like Flower's `Strategy.start`, one loop owns the order of a round:

    configure_train -> grid.exchange -> (replies, report) -> accounting.record(report)
    -> aggregate_train -> evaluate -> observers.on_round_end(row)

Everything else a run does between rounds (the metrics file, the ledger flush,
checkpoints, progress, tracking, the failure watch, signal and budget stops, the
empirical audits) is a `RoundObserver`; the loop knows none of them by name.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord

from fedsim.seeding import derive_seed

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from fedsim.config import Scenario
    from fedsim.engine.grid import RoundReport, VirtualClientGrid
    from fedsim.privacy.accounting import PrivacyAccounting


@dataclass(frozen=True)
class Stop:
    """Why the loop stopped before a round; `interrupted` runs can be resumed."""

    reason: str
    interrupted: bool = False


class RoundObserver:
    """Hooks called by `RoundLoop`; every hook does nothing unless overridden."""

    def on_round_start(self, loop: RoundLoop, rnd: int) -> Stop | None:
        """Before round `rnd`: a Stop ends the run here (no later observer is asked)."""
        return None

    def on_replies(self, loop: RoundLoop, report: RoundReport) -> None:
        """The training replies of a round are in (before aggregation)."""

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        """Round finished: `row` is its metrics line."""

    def on_run_end(self, loop: RoundLoop) -> None:
        """The loop ended (all rounds, or a Stop); not called when a round raised."""


#: Central evaluation of the global weights: (accuracy, loss).
Evaluator = Callable[[ArrayRecord], tuple[float, float]]


class RoundLoop:
    """The rounds of one run, from `first_round` to `scenario.rounds`.

    Args:
        scenario: seeds, rounds, evaluation schedule and round timeout.
        strategy: the Flower strategy (configure/aggregate hooks).
        grid: the virtual-client grid.
        accounting: the run's privacy accounting (records each training report).
        arrays: the global weights to start from.
        evaluate: central evaluation of the global weights.
        observers: called in order at each hook.
        first_round: 1, or the round after a resumed checkpoint.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        strategy: Strategy,
        grid: VirtualClientGrid,
        accounting: PrivacyAccounting,
        arrays: ArrayRecord,
        evaluate: Evaluator,
        observers: Sequence[RoundObserver] = (),
        first_round: int = 1,
    ) -> None:
        self.scenario = scenario
        self.strategy = strategy
        self.grid = grid
        self.accounting = accounting
        self.arrays = arrays
        self.evaluate = evaluate
        self.observers = list(observers)
        self.first_round = first_round
        self.stop: Stop | None = None

    @property
    def interrupted(self) -> bool:
        return self.stop is not None and self.stop.interrupted

    def run(self) -> ArrayRecord:
        """Run the rounds; returns the final global weights."""
        for rnd in range(self.first_round, self.scenario.rounds + 1):
            t0 = time.perf_counter()
            self.stop = self._stop_before(rnd)
            if self.stop is not None:
                break
            row = self.round(rnd)
            row["seconds"] = round(time.perf_counter() - t0, 4)
            for obs in self.observers:
                obs.on_round_end(self, row)
        for obs in self.observers:
            obs.on_run_end(self)
        return self.arrays

    def _stop_before(self, rnd: int) -> Stop | None:
        for obs in self.observers:
            stop = obs.on_round_start(self, rnd)
            if stop is not None:
                return stop
        return None

    def round(self, rnd: int) -> dict[str, Any]:
        """Train, account and evaluate round `rnd`; returns its metrics line."""
        sc = self.scenario
        report, train_metrics = self._train(rnd)
        row: dict[str, Any] = {"round": rnd, "accuracy": None, "loss": None}
        row["train_loss"] = finite(train_metrics, "train_loss")
        row.update(self.accounting.epsilon_row())
        row.update(client_counts(report))
        row["ray_nodes"] = sorted(set(report.nodes))
        every = sc.evaluation.every
        due = bool(every and rnd % every == 0) or rnd == sc.rounds
        if sc.evaluation.federated_fraction > 0 and due:
            self._federated_evaluation(rnd, row)
        if due:
            row["accuracy"], row["loss"] = self.evaluate(self.arrays)
        return row

    def _train(self, rnd: int) -> tuple[RoundReport, Any]:
        # Flower samples with the module-level `random`; seeding it per round makes
        # the cohort a function of (seed, round) alone.
        random.seed(derive_seed(self.scenario.seed, "sample-clients", rnd))
        messages = self.strategy.configure_train(rnd, self.arrays, ConfigRecord(), self.grid)
        replies, report = self.grid.exchange(
            messages, round=rnd, timeout=self.scenario.backend.round_timeout
        )
        self.accounting.record(report)
        for obs in self.observers:
            obs.on_replies(self, report)
        new_arrays, train_metrics = self.strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            self.arrays = new_arrays
        return report, train_metrics

    def _federated_evaluation(self, rnd: int, row: dict[str, Any]) -> None:
        random.seed(derive_seed(self.scenario.seed, "sample-evaluators", rnd))
        messages = self.strategy.configure_evaluate(rnd, self.arrays, ConfigRecord(), self.grid)
        replies, report = self.grid.exchange(
            messages, round=rnd, timeout=self.scenario.backend.round_timeout
        )
        row["cohorts_resent"] += report.cohorts_resent
        row["worker_restarts"] += report.worker_restarts
        fed = self.strategy.aggregate_evaluate(rnd, replies)
        row["fed_accuracy"] = finite(fed, "accuracy")
        row["fed_loss"] = finite(fed, "loss")
        row.update(fairness(report))


def client_counts(report: RoundReport) -> dict[str, Any]:
    """What happened to the sampled clients: trained, dropped, late, failed (with errors).

    An attempt whose worker failed and that was sent again is not a failed client
    (its re-send's outcome counts); it shows in `cohorts_resent`, and the restarted
    workers in `worker_restarts`.
    """
    outs = [o for o in report.outcomes if not o.extra.get("resent")]
    dropped = [o for o in outs if o.extra.get("dropped")]
    late = [o for o in outs if o.error is not None and o.extra.get("late")]
    failed = [o for o in outs if o.error is not None and o not in dropped and o not in late]
    sim = [float(o.extra["sim_seconds"]) for o in outs if "sim_seconds" in o.extra]
    return {
        "clients_trained": sum(1 for o in outs if o.error is None),
        "clients_failed": len(failed),
        "clients_dropped": len(dropped),
        "clients_late": len(late),
        "sim_round_seconds": max(sim) if sim else None,
        "failures": [{"client": o.client, "error": o.error} for o in failed],
        "cohorts_resent": report.cohorts_resent,
        "worker_restarts": report.worker_restarts,
    }


def fairness(report: RoundReport) -> dict[str, Any]:
    """Per-client view of federated evaluation: unweighted mean and worst decile.

    The worst-decile accuracy is the mean over the 10 % of evaluated clients with the
    lowest accuracy (at least one client): what the least-served clients get.
    """
    accs = sorted(
        float(o.metrics["accuracy"])
        for o in report.outcomes
        if o.error is None and o.metrics is not None and int(o.metrics["num-examples"]) > 0
    )
    if not accs:
        return {"fed_clients": 0, "fed_accuracy_client_mean": None, "fed_accuracy_worst10": None}
    k = max(1, len(accs) // 10)
    return {
        "fed_clients": len(accs),
        "fed_accuracy_client_mean": float(np.mean(accs)),
        "fed_accuracy_worst10": float(np.mean(accs[:k])),
    }


def finite(record: Any, key: str) -> float | None:
    """`record[key]` as a float, None when absent or not finite."""
    if record is None or key not in record:
        return None
    value = float(record[key])
    return value if math.isfinite(value) else None
