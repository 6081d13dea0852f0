"""Hand-built run directories for the audit's unit tests (no Ray, no training).

The ledger is written by fedsim's own PrivacyLedger from the events
plan_participation prescribes, so its epsilons are the correct ones; tests then
tamper with single lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.clients.dp import plan_participation
from fedsim.clients.worker import shard_sizes
from fedsim.config import Scenario
from fedsim.privacy import PrivacyEvent, PrivacyLedger
from fedsim.rundir import RunDir, clean_json

EventHook = Callable[[int, int, PrivacyEvent], PrivacyEvent]


def cohort(scenario: Scenario, rnd: int) -> list[int]:
    """A deterministic cohort: clients_per_round consecutive ids, rotating by round."""
    n, m = scenario.population, scenario.clients_per_round
    return [(rnd - 1 + k) % n for k in range(m)]


def write_run(
    path: Path,
    scenario: Scenario,
    *,
    rounds: int | None = None,
    event_hook: EventHook | None = None,
    summary: bool = True,
) -> Path:
    """Write scenario.toml, clients.json, a correct privacy ledger and summary.json.

    Args:
        path: Directory to create.
        scenario: The scenario (written with ``to_toml``).
        rounds: Rounds to write (default: the scenario's).
        event_hook: ``(round, client, planned_event) -> event`` to deviate from the plan.
        summary: Whether to write summary.json.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / "scenario.toml").write_text(scenario.to_toml(), encoding="utf-8")
    sizes = shard_sizes(scenario)
    RunDir(path).write_clients(sizes)  # as the server does at the start of a run
    dp = scenario.dp
    with PrivacyLedger(
        path / "privacy_ledger.jsonl", delta=dp.delta, accountant=dp.accountant
    ) as ledger:
        for rnd in range(1, (rounds or scenario.rounds) + 1):
            for client in cohort(scenario, rnd):
                plan = plan_participation(scenario, int(sizes[client]))
                event = PrivacyEvent(
                    noise_multiplier=plan.noise_multiplier,
                    sample_rate=plan.sample_rate,
                    steps=plan.steps,
                    max_grad_norm=plan.max_grad_norm,
                    delta=plan.delta,
                )
                if event_hook is not None:
                    event = event_hook(rnd, client, event)
                ledger.record(round=rnd, client=client, event=event)
        eps = ledger.summary(scenario.population)
    if summary:
        doc = {
            "scenario": scenario.name,
            "epsilon": eps,
            "delta": dp.delta,
            "dp_mode": dp.mode,
            "accountant": dp.accountant,
            "noise_rng": "os-entropy" if dp.secure_rng else "seeded",
            "sampling_rng": "os-entropy" if dp.secure_rng else "seeded",
            "population": scenario.population,
        }
        # As the run writes it: strict JSON, an infinite epsilon becomes null.
        (path / "summary.json").write_text(
            json.dumps(clean_json(doc), allow_nan=False), encoding="utf-8"
        )
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The ledger's lines as dicts."""
    text = (path / "privacy_ledger.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    """Replace the ledger with ``lines`` (one JSON object each)."""
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (path / "privacy_ledger.jsonl").write_text(text, encoding="utf-8")


def write_user_run(
    path: Path,
    scenario: Scenario,
    cohorts: list[list[int]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """A user-level (DP-FedAvg) run dir: one release per round, written by PrivacyLedger.

    Args:
        path: Directory to create.
        scenario: A scenario with dp.mode = 'user'.
        cohorts: The clients of each round's release (its length is the rounds written).
        extra: Fields added to every line (e.g. the noise split of adaptive clipping).
    """
    from fedsim.strategies.factory import user_noise_multiplier, user_sample_rate

    path.mkdir(parents=True, exist_ok=True)
    (path / "scenario.toml").write_text(scenario.to_toml(), encoding="utf-8")
    dp = scenario.dp
    with PrivacyLedger(
        path / "privacy_ledger.jsonl", delta=dp.delta, accountant=dp.accountant
    ) as ledger:
        for rnd, clients in enumerate(cohorts, start=1):
            ledger.record_user(
                round=rnd,
                noise_multiplier=user_noise_multiplier(scenario),
                sample_rate=user_sample_rate(scenario),
                clip_norm=dp.max_grad_norm,
                sampling=dp.client_sampling,
                clients=clients,
                **(extra or {}),
            )
        values = sorted(ledger.user_epsilon_of(c) for c in range(scenario.population))
    doc = {
        "epsilon": {
            "min": values[0],
            "median": float(np.median(values)),
            "max": values[-1],
        },
        "delta": dp.delta,
        "dp_mode": dp.mode,
        "accountant": dp.accountant,
        "noise_rng": "os-entropy" if dp.secure_rng else "seeded",
        "sampling_rng": "os-entropy" if dp.secure_rng else "seeded",
    }
    (path / "summary.json").write_text(json.dumps(clean_json(doc)), encoding="utf-8")
    return path
