"""What a run does between rounds, as `RoundLoop` observers.

Each observer has one job: stop on a signal or an exhausted budget, watch for
real client errors, write the metrics line, flush the ledger, log to a tracker,
checkpoint, show progress, write the empirical audits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.engine.loop import RoundLoop, RoundObserver, Stop

if TYPE_CHECKING:
    from fedsim.cli.progress import RunProgress
    from fedsim.config import Scenario
    from fedsim.engine.grid import RoundReport
    from fedsim.failures import FailureWatch
    from fedsim.privacy.accounting import PrivacyAccounting
    from fedsim.rundir import JsonLines, RunDir


class SignalStop(RoundObserver):
    """Stops at the next round boundary once SIGINT/SIGTERM set `event`."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_round_start(self, loop: RoundLoop, rnd: int) -> Stop | None:
        if self.event.is_set():
            return Stop(f"interrupted by a signal before round {rnd}", interrupted=True)
        return None


class BudgetStop(RoundObserver):
    """Stops before a round that would take a client past dp.max_epsilon."""

    def __init__(self, accounting: PrivacyAccounting, note: Callable[[str], None]) -> None:
        self.accounting = accounting
        self.note = note

    def on_round_start(self, loop: RoundLoop, rnd: int) -> Stop | None:
        reason = self.accounting.stop_reason(rnd, lambda: loop.grid.get_node_ids())
        if reason is None:
            return None
        self.note(reason)
        return Stop(reason)


class FailureObserver(RoundObserver):
    """Real client errors stop the run (`fedsim.failures.FailureWatch`)."""

    def __init__(self, watch: FailureWatch) -> None:
        self.watch = watch

    def on_replies(self, loop: RoundLoop, report: RoundReport) -> None:
        self.watch.observe(report)


class MetricsWriter(RoundObserver):
    """Appends each round's line to `metrics` and to metrics.jsonl, then the ledger's."""

    def __init__(
        self, metrics: list[dict[str, Any]], file: JsonLines, accounting: PrivacyAccounting
    ) -> None:
        self.metrics = metrics
        self.file = file
        self.accounting = accounting

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        self.file.write(row)
        self.file.flush()
        self.accounting.flush()


class TrackingObserver(RoundObserver):
    """Logs each metrics line to the experiment tracker (`fedsim.engine.tracking`)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        self.tracker.on_round(row)


class Checkpointer(RoundObserver):
    """Saves weights, strategy state and file positions every checkpoint.every rounds."""

    def __init__(
        self,
        scenario: Scenario,
        path: Path,
        metrics: list[dict[str, Any]],
        accounting: PrivacyAccounting,
    ) -> None:
        self.scenario = scenario
        self.path = path
        self.metrics = metrics
        self.accounting = accounting

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        from fedsim.engine.checkpoint import (
            Checkpoint,
            save_checkpoint,
            scenario_hash,
            strategy_state,
        )

        sc, rnd = self.scenario, int(row["round"])
        every = sc.checkpoint.every
        if not every or (rnd % every != 0 and rnd != sc.rounds):
            return
        weights = loop.arrays.to_torch_state_dict()
        save_checkpoint(
            self.path,
            Checkpoint(
                round=rnd,
                weights={k: v.clone() for k, v in weights.items()},
                strategy_state=strategy_state(loop.strategy),
                ledger_lines=self.accounting.lines,
                metrics_lines=len(self.metrics),
                scenario_hash=scenario_hash(sc.fingerprint()),
            ),
        )


class ProgressObserver(RoundObserver):
    """Updates the terminal progress display after each round."""

    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        self.progress.update(row)


def final_weights(loop: RoundLoop) -> dict[str, Any]:
    """A copy of the loop's global weights as torch tensors."""
    return {k: v.clone() for k, v in loop.arrays.to_torch_state_dict().items()}


class CanaryAudit(RoundObserver):
    """After a completed run, scores the canaries (Steinke et al. 2023) and writes
    empirical_audit.json. The guesses use a few (k+, k-) choices fixed in advance;
    best_lower_bound pays for trying several with a union bound."""

    def __init__(
        self,
        scenario: Scenario,
        rundir: RunDir,
        accounting: PrivacyAccounting,
        model: Any,
        bundle: Any,
    ) -> None:
        self.scenario, self.rundir, self.accounting = scenario, rundir, accounting
        self.model, self.bundle = model, bundle

    def on_run_end(self, loop: RoundLoop) -> None:
        if loop.interrupted:
            return
        from fedsim.canaries import canary_plan, canary_scores
        from fedsim.empirical.one_run import best_lower_bound

        sc = self.scenario
        self.model.load_state_dict(final_weights(loop))
        m = sc.audit.canaries
        offset = len(self.bundle.train.base)
        plan = canary_plan(m, sc.population, offset, sc.seed)
        scores = canary_scores(self.model, self.bundle.train, offset)
        ks = sorted({max(1, m // d) for d in (20, 10, 4)})
        # The bound is tested against the claim's (eps, delta), so it is computed at
        # that delta (Steinke et al. 2023, approximate DP); with DP off nothing is claimed.
        dp_on = sc.dp.mode != "off"
        result = best_lower_bound(
            scores,
            plan.included,
            confidence=sc.audit.confidence,
            k_values=[(k, k) for k in ks],
            delta=sc.dp.delta if dp_on else 0.0,
        )
        eps = self.accounting.epsilon_summary()
        result["claimed_epsilon"] = eps["max"] if eps else None
        result["claimed_delta"] = sc.dp.delta if dp_on else None
        result["included"] = int(plan.included.sum())
        claimed = result["claimed_epsilon"]
        result["violation"] = bool(claimed is not None and result["epsilon_lower_bound"] > claimed)
        self.rundir.write_json(self.rundir.path / "empirical_audit.json", result)


class OneShotAudit(RoundObserver):
    """After a completed DP-FedAvg run with canary clients (Andrew et al. 2023): cosines
    of the final model delta with the inserted vs the held-out canary directions,
    turned into an epsilon *estimate* (not a bound), in empirical_audit.json."""

    def __init__(
        self,
        scenario: Scenario,
        rundir: RunDir,
        accounting: PrivacyAccounting,
        initial: dict[str, Any],
    ) -> None:
        self.scenario, self.rundir, self.accounting = scenario, rundir, accounting
        self.initial = initial

    def on_run_end(self, loop: RoundLoop) -> None:
        if loop.interrupted:
            return
        from fedsim.empirical.one_shot import cosines, epsilon_estimate

        initial, final, strategy = self.initial, final_weights(loop), loop.strategy
        keys = list(initial)
        delta = np.concatenate([(final[k] - initial[k]).numpy().ravel() for k in keys])
        dirs = strategy.canary_directions({k: initial[k].numpy() for k in keys})  # type: ignore[attr-defined]
        cos = cosines(delta.astype(np.float64), dirs)
        k = strategy.canaries  # type: ignore[attr-defined]
        estimate = epsilon_estimate(cos[:k], cos[k:], delta=self.scenario.dp.delta)
        eps = self.accounting.epsilon_summary()
        self.rundir.write_json(
            self.rundir.path / "empirical_audit.json",
            {
                "method": "one_shot",
                "epsilon_estimate": estimate,
                "delta": self.scenario.dp.delta,
                "canaries": k,
                "held_out": k,
                "canary_participations_mean": float(
                    strategy.canary_participations.mean()  # type: ignore[attr-defined]
                ),
                "inserted_cosine_mean": float(cos[:k].mean()),
                "heldout_cosine_mean": float(cos[k:].mean()),
                "claimed_epsilon": eps["max"] if eps else None,
                "note": "an estimate (Gaussian fit of canary cosines), not a certified bound",
            },
        )


class RoundTimer(RoundObserver):
    """Wall times of a run's rounds, taken at the round loop's own hooks.

    `fedsim.run(..., observers=[timer])` hands this very object to the `RoundLoop`: the
    ServerApp runs in a thread of this process (Flower's `run_simulation` starts it with
    `threading.Thread`, on the ServerApp object fedsim passes), so nothing is polled or
    read back from a file. A round runs from its `on_round_start` (after fedsim's signal
    and budget stops let it start) to its `on_round_end` (after its metrics line, ledger
    and checkpoint are written).

    Attributes:
        rounds, round_seconds: the rounds that finished and their seconds, in order.
        round_ends: seconds from `t0` to each of those rounds' end.
        first_start_after: seconds from `t0` to round 1 (or a resume's first) starting.
    """

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self.rounds: list[int] = []
        self.round_seconds: list[float] = []
        self.round_ends: list[float] = []
        self.first_start_after: float | None = None
        self._started: dict[int, float] = {}

    @property
    def first_end_after(self) -> float | None:
        """Seconds from `t0` to the first round's end (None before one ended)."""
        return self.round_ends[0] if self.round_ends else None

    def on_round_start(self, loop: RoundLoop, rnd: int) -> Stop | None:
        now = time.perf_counter()
        if self.first_start_after is None:
            self.first_start_after = now - self.t0
        self._started[rnd] = now
        return None

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        rnd = int(row["round"])
        self.rounds.append(rnd)
        self.round_seconds.append(now - self._started.pop(rnd))
        self.round_ends.append(now - self.t0)
