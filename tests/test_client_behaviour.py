"""Dropouts, stragglers and heterogeneous epochs: seeded, recorded, and honest on privacy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.clients.dp import local_steps, plan_participation
from fedsim.clients.worker import client_speed
from fedsim.rundir import read_jsonl
from tests.conftest import small_scenario
from tests.test_server_loop import serve


def test_dropped_clients_spend_no_privacy(tmp_path: Path, flower_run_context: Any) -> None:
    state = serve(
        tmp_path,
        rounds=3,
        population=10,
        sampling__clients_per_round=6,
        faults__dropout_probability=0.5,
        model__channels=[2],
        model__hidden=0,
    )
    dropped = sum(m["clients_dropped"] for m in state.metrics)
    trained = sum(m["clients_trained"] for m in state.metrics)
    assert dropped > 0 and trained > 0 and dropped + trained == 18
    ledger = read_jsonl(state.rundir.ledger)
    assert len(ledger) == trained  # one line per client that trained, none for dropouts


def test_stragglers_past_the_deadline_spent_privacy_but_are_not_aggregated(
    tmp_path: Path, flower_run_context: Any
) -> None:
    sc = small_scenario(population=6, sampling__clients_per_round=6, faults__speed_sigma=1.0)
    speeds = [client_speed(sc, c) for c in range(6)]
    assert len(set(speeds)) == 6  # a fixed, seeded speed per client
    steps = local_steps(sc, 239)
    deadline = sorted(s * steps for s in speeds)[3]  # about half are late
    state = serve(
        tmp_path,
        rounds=2,
        population=6,
        sampling__clients_per_round=6,
        faults__speed_sigma=1.0,
        faults__round_deadline=deadline,
        model__channels=[2],
        model__hidden=0,
    )
    late = [line for line in read_jsonl(state.rundir.ledger) if line["status"] == "late"]
    per_round = [m["clients_late"] for m in state.metrics]
    assert sum(per_round) == len(late) > 0
    assert all(m["clients_trained"] + m["clients_late"] == 6 for m in state.metrics)
    assert all(line["steps"] > 0 and "deadline" in line["error"] for line in late)
    assert all(m["sim_round_seconds"] > deadline for m in state.metrics)


def test_accept_late_keeps_their_updates(tmp_path: Path, flower_run_context: Any) -> None:
    state = serve(
        tmp_path,
        rounds=1,
        population=4,
        sampling__clients_per_round=4,
        faults__speed_sigma=1.0,
        faults__round_deadline=0.001,
        faults__accept_late=True,
        model__channels=[2],
        model__hidden=0,
    )
    assert state.metrics[0]["clients_trained"] == 4 and state.metrics[0]["clients_late"] == 0


def test_heterogeneous_epochs_vary_steps_within_the_plan(
    tmp_path: Path, flower_run_context: Any
) -> None:
    state = serve(
        tmp_path,
        rounds=3,
        population=6,
        sampling__clients_per_round=4,
        train__epochs=4,
        train__min_epochs=1,
        model__channels=[2],
        model__hidden=0,
    )
    lines = read_jsonl(state.rundir.ledger)
    steps = {line["steps"] for line in lines}
    assert len(steps) > 1  # clients did different amounts of work
    sc = small_scenario(train__epochs=4, train__min_epochs=1)
    for line in lines:
        assert "mismatch" not in line
        assert line["steps"] <= plan_participation(sc, 10_000).steps
