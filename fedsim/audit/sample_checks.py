"""Sample-level lines against the scenario's DP-SGD plan for each client."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.findings import Finding, close, violation, warning, who
from fedsim.audit.inputs import LedgerLine
from fedsim.audit.line_checks import check_common, check_stored
from fedsim.config import Scenario
from fedsim.privacy.records import DISCARDED


def check_sample_lines(
    lines: Sequence[LedgerLine],
    scenario: Scenario,
    shard_sizes: np.ndarray | None,
    cache: EpsilonCache,
) -> list[Finding]:
    """Every sample-level line against the scenario's plan and its own stored epsilon.

    Args:
        lines: The sample-level lines, in file order.
        scenario: The run's scenario.
        shard_sizes: Training shard size of each client (None only when ``lines`` is
            empty or DP is off, where no plan exists).
        cache: Shared epsilon cache.
    """
    # The plan maths lives in fedsim.privacy.plan: the audit reads no client module.
    from fedsim.privacy.plan import scenario_plan

    out: list[Finding] = []
    if lines and scenario.dp.mode != "sample":
        out.append(_wrong_mode(len(lines), scenario))
    plans: dict[int, Any] = {}
    histories: dict[int, list[tuple[float, float, int]]] = {}
    seen: Counter[tuple[int, int]] = Counter()
    per_round: Counter[int] = Counter()
    for line in lines:
        rec, n = line.record, line.line_no
        client, rnd = int(rec["client"]), int(rec["round"])
        out.extend(check_common(line, scenario))
        counted = rec["status"] != DISCARDED  # a killed attempt's line, run again later
        if counted:
            seen[(rnd, client)] += 1
            per_round[rnd] += 1
        if counted and seen[(rnd, client)] == 2:
            out.append(
                warning(
                    "duplicate-line",
                    f"{who(rec)} has more than one line; each is composed (over-counts)",
                    n,
                )
            )
        history = histories.setdefault(client, [])
        history.append(
            (float(rec["noise_multiplier"]), float(rec["sample_rate"]), int(rec["steps"]))
        )
        out.extend(check_stored(line, history, cache))
        if client >= scenario.population:
            out.append(_outside_population(rec, n, scenario))
            continue
        if scenario.dp.mode != "sample" or shard_sizes is None:
            continue
        size = int(shard_sizes[client])
        if size not in plans:
            plans[size] = scenario_plan(scenario, size)
        out.extend(_check_plan(line, plans[size], size, scenario))
    out.extend(_check_round_sizes(per_round, scenario))
    return out


def _wrong_mode(lines: int, scenario: Scenario) -> Finding:
    """Sample-level lines in the ledger of a scenario that is not dp.mode = 'sample'."""
    return violation(
        "ledger-scenario",
        f"the ledger has {lines} sample-level line(s) but the scenario has "
        f"dp.mode = {scenario.dp.mode!r}",
    )


def _outside_population(rec: dict[str, Any], line_no: int, scenario: Scenario) -> Finding:
    """A line charging a client the scenario's population does not have."""
    return violation(
        "ledger-scenario",
        f"{who(rec)}: client {int(rec['client'])} is outside the population "
        f"0..{scenario.population - 1}; counted in the audit anyway",
        line_no,
    )


def _check_round_sizes(per_round: Counter[int], scenario: Scenario) -> list[Finding]:
    """No round may have more sample-level lines than the scenario samples clients."""
    return [
        violation(
            "ledger-scenario",
            f"round {rnd} has {count} sample-level lines but the scenario samples "
            f"{scenario.clients_per_round} clients per round",
        )
        for rnd, count in sorted(per_round.items())
        if count > scenario.clients_per_round
    ]


def _check_plan(line: LedgerLine, plan: Any, size: int, scenario: Scenario) -> list[Finding]:
    rec, n = line.record, line.line_no
    out = []
    problems = []
    for name in ("noise_multiplier", "max_grad_norm"):
        got, want = float(rec[name]), float(getattr(plan, name))
        if not close(got, want):
            problems.append(f"{name} {got!r} != planned {want!r}")
    if int(rec["steps"]) > plan.steps:
        problems.append(f"steps {rec['steps']} > planned {plan.steps}")
    if problems:
        out.append(
            violation(
                "plan-mismatch",
                f"{who(rec)} (shard of {size}): " + "; ".join(problems),
                n,
            )
        )
    accounted, realised = float(rec["sample_rate"]), float(plan.sample_rate)
    if not close(accounted, realised):
        out.append(
            violation(
                "sample-rate",
                f"{who(rec)}: accounted sample_rate {accounted!r} but the client's Poisson "
                f"rate is batch_size / shard_size = {scenario.train.batch_size}/{size} = "
                f"{realised!r}",
                n,
            )
        )
    return out
