"""`benchmarks.common.RoundTimer` times the rounds at the loop's hooks (no Ray, no clock checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import RoundTimer, TimedRun
from fedsim.engine import simulation
from fedsim.launch import client_side
from tests.conftest import small_scenario
from tests.test_run_observers import in_process


def test_round_timer_records_every_round_through_run(
    tmp_path: Path, flower_run_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation, "_simulate", in_process())
    timer = RoundTimer()
    sc = small_scenario(rounds=3, population=4, sampling__clients_per_round=2, dp__mode="off")
    result = simulation.run(
        sc, tmp_path / "run", clients=client_side(), progress=False, observers=[timer]
    )
    assert timer.rounds == [m["round"] for m in result.metrics] == [1, 2, 3]
    assert len(timer.round_seconds) == 3 and all(s >= 0 for s in timer.round_seconds)
    # round 1 starts after run() was called and ends after it started
    assert timer.first_start_after is not None and timer.first_end_after is not None
    assert 0 <= timer.first_start_after <= timer.first_end_after


def test_timed_run_startup_is_first_round_done_minus_a_warm_round() -> None:
    tr = TimedRun(
        label="x",
        wall_seconds=20.0,
        round_seconds=[6.0, 1.0, 3.0],
        round1_start_seconds=4.0,
        first_round_done_after=10.0,
        metrics=[],
        summary={},
        state_dict={},
    )
    assert tr.warm_median() == 2.0
    assert tr.startup_seconds == 8.0
    d = tr.as_dict()
    assert d["warm_round_seconds"] == [1.0, 3.0]
    assert d["run_to_round1_start_seconds"] == 4.0
    assert d["time_to_first_metrics_seconds"] == 10.0
