"""Run-level checks: budgets, summary.json's claims, accountant disagreement, delta."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.crosscheck import AccountantRow
from fedsim.audit.findings import STORED_EPSILON_RTOL, Finding, differs, violation, warning
from fedsim.audit.sample import SampleLevel
from fedsim.audit.stats import Spread
from fedsim.audit.user import UserLevel
from fedsim.config import Scenario


def check_budget(
    scenario: Scenario, sample: SampleLevel | None, user: UserLevel | None
) -> list[Finding]:
    """Epsilons above ``dp.max_epsilon`` (both levels) or ``dp.target_epsilon`` (sample)."""
    out = []
    # Relative slack: the plan's bisection stops exactly at the target, float noise aside.
    slack = 1.0 + STORED_EPSILON_RTOL
    max_eps = getattr(scenario.dp, "max_epsilon", None)
    shared = [("dp.max_epsilon", float(max_eps))] if max_eps is not None else []
    if sample is not None:
        budgets = list(shared)
        if scenario.dp.mode == "sample" and scenario.dp.target_epsilon is not None:
            # plan_participation picks the noise so that a client sampled in every
            # round stays within the target: no client may exceed it.
            budgets.append(("dp.target_epsilon", float(scenario.dp.target_epsilon)))
        for field, budget in budgets:
            over = [c for c in sample.clients if c.epsilon > budget * slack]
            if over:
                worst = max(over, key=lambda c: c.epsilon)
                out.append(
                    violation(
                        "budget",
                        f"sample level: {len(over)} client(s) exceed {field} = {budget:g}; "
                        f"worst is client {worst.client} with epsilon {worst.epsilon:.6g}",
                    )
                )
    if user is not None:
        out.extend(_user_budget(scenario, user, shared, slack))
    return out


def _user_budget(
    scenario: Scenario, user: UserLevel, shared: list[tuple[str, float]], slack: float
) -> list[Finding]:
    """User level: dp.max_epsilon is per client; dp.target_epsilon bounds the population."""
    out = []
    budgets = list(shared)
    if scenario.dp.mode == "user" and scenario.dp.target_epsilon is not None:
        # user_noise_multiplier picks z so that all scenario rounds stay within it.
        budgets.append(("dp.target_epsilon", float(scenario.dp.target_epsilon)))
    for field, budget in budgets:
        if user.guarantee <= budget * slack:
            continue
        if user.poisson_releases or field == "dp.target_epsilon":
            out.append(
                violation(
                    "budget",
                    f"user level: population epsilon {user.guarantee:.6g} exceeds "
                    f"{field} = {budget:g}",
                )
            )
        elif user.per_client is not None:
            over = {c: e for c, e in user.per_client_seen.items() if e > budget * slack}
            if over:
                worst = max(over, key=lambda c: over[c])
                out.append(
                    violation(
                        "budget",
                        f"user level: {len(over)} client(s) exceed {field} = {budget:g}; "
                        f"worst is client {worst} with epsilon {over[worst]:.6g}",
                    )
                )
        else:
            out.append(
                warning(
                    "budget",
                    f"user level: the composition of all releases ({user.guarantee:.6g}) "
                    f"exceeds {field} = {budget:g}, and per-client budgets cannot be "
                    "checked: the fixed-sampling lines do not list their clients",
                )
            )
    return out


def check_summary(
    summary: dict[str, Any] | None,
    scenario: Scenario,
    sample: SampleLevel | None,
    user: UserLevel | None,
) -> list[Finding]:
    """summary.json's claims (noise RNG, accountant, delta, epsilon spread) vs the audit."""
    if summary is None:
        return [
            warning(
                "summary-missing",
                "summary.json is absent (run killed or still running?); noise RNG taken "
                "from the scenario's dp.secure_rng",
            )
        ]
    out = _check_summary_settings(summary, scenario)
    claimed = summary.get("epsilon")
    if not isinstance(claimed, dict):
        return out
    # summary.json's spread is over the scenario's level: per-client example-level
    # epsilons with dp.mode = 'sample', per-client user-level ones with 'user'.
    spread: Spread | None = None
    if scenario.dp.mode == "sample" and sample is not None:
        spread = sample.epsilon
    elif scenario.dp.mode == "user" and user is not None:
        spread = user.per_client
        if spread is None:
            out.append(
                warning(
                    "summary-unchecked",
                    "summary.json's per-client user-level epsilons cannot be recomputed: "
                    "the fixed-sampling lines do not list their clients",
                )
            )
    if spread is not None:
        out.extend(_check_summary_spread(claimed, spread))
    return out


def _check_summary_settings(summary: dict[str, Any], scenario: Scenario) -> list[Finding]:
    """summary.json's noise RNG, sampling RNG, accountant and delta vs the scenario."""
    if scenario.dp.mode == "off":
        return []
    expected = {
        "noise_rng": "os-entropy" if scenario.dp.secure_rng else "seeded",
        "sampling_rng": "os-entropy" if scenario.dp.secure_rng else "seeded",
        "accountant": scenario.dp.accountant,
        "delta": scenario.dp.delta,
    }
    return [
        violation(
            "summary",
            f"summary.json has {key} = {summary[key]!r} but the scenario implies {want!r}",
        )
        for key, want in expected.items()
        if key in summary and summary[key] != want
    ]


def _check_summary_spread(claimed: dict[str, Any], spread: Spread) -> list[Finding]:
    """summary.json's epsilon min/median/max vs what the ledger composes to."""
    out = []
    for key, value in (("min", spread.min), ("median", spread.median), ("max", spread.max)):
        stored = claimed.get(key)
        # summary.json is strict JSON: an infinite epsilon is written as null.
        stored_f = math.inf if stored is None else float(stored)
        if differs(stored_f, value):
            out.append(
                violation(
                    "stored-epsilon",
                    f"summary.json epsilon {key} = {stored!r} but the ledger composes to {value!r}",
                )
            )
    return out


def check_disagreement(rows: Sequence[AccountantRow]) -> list[Finding]:
    """Warn where accountants disagree in a way that signals a bug (not RDP's looseness)."""
    return [
        warning("accountant-disagreement", f"{row.subject}: {problem}")
        for row in rows
        for problem in row.problems
    ]


def _percent(value: float) -> str:
    return "infinitely" if math.isinf(value) else f"{value:.1%}"


def check_shards_known(
    scenario: Scenario, sample_lines: Sequence[Any], shard_sizes: np.ndarray | None
) -> list[Finding]:
    """Warn when the plan checks that need each client's shard size cannot run.

    A run written before fedsim wrote ``clients.json`` lacks the sizes; the audit reads
    the run directory only, so it says what it cannot check instead of loading the data.
    """
    if shard_sizes is not None or not sample_lines or scenario.dp.mode != "sample":
        return []
    return [
        warning(
            "shards-unknown",
            "no clients.json (the run predates it): each client's shard size is unknown, "
            "so its noise, clip norm, steps and sample rate (batch_size / shard size) "
            "are not checked against the plan, nor delta against the largest shard",
        )
    ]


def check_delta_size(
    scenario: Scenario, shard_sizes: np.ndarray | None, has_sample: bool, has_user: bool
) -> list[Finding]:
    """Warn when delta is not small against the records it protects (1/n rule of thumb)."""
    out = []
    delta = scenario.dp.delta
    if has_sample and shard_sizes is not None and len(shard_sizes):
        largest = int(np.max(shard_sizes))
        if delta >= 1.0 / largest:
            out.append(
                warning(
                    "delta-size",
                    f"delta = {delta:g} >= 1 / {largest} (the largest shard): a mechanism "
                    "that leaks one example outright could satisfy it",
                )
            )
    if has_user and delta >= 1.0 / scenario.population:
        out.append(
            warning(
                "delta-size",
                f"delta = {delta:g} >= 1 / {scenario.population} (the population): user "
                "level protects clients, so delta should be well below 1 / population",
            )
        )
    return out


def accountant_notes(cache: EpsilonCache) -> list[Finding]:
    """Warnings raised inside accountant libraries, once each."""
    return [warning("accountant-note", note) for note in cache.notes]
