"""A caller's round observers: `fedsim.run(..., observers=[...])` reaches the round loop,
whose hooks call them in order with the round numbers (in-process cohorts, no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedsim.cli.progress import RunProgress
from fedsim.engine import simulation
from fedsim.engine.grid import RoundReport
from fedsim.engine.loop import RoundLoop, RoundObserver, Stop
from fedsim.engine.simulation import ServerRun, _server_loop
from fedsim.launch import client_side
from fedsim.rundir import RunDir
from tests.conftest import small_scenario
from tests.test_grid import InProcessGrid

TINY = dict(rounds=3, population=4, sampling__clients_per_round=2, dp__mode="off")


class Recorder(RoundObserver):
    """Writes down every hook call: (hook, round) in the order they came."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def on_round_start(self, loop: RoundLoop, rnd: int) -> Stop | None:
        self.calls.append(("start", rnd))
        return None

    def on_replies(self, loop: RoundLoop, report: RoundReport) -> None:
        self.calls.append(("replies", report.round))

    def on_round_end(self, loop: RoundLoop, row: dict[str, Any]) -> None:
        self.calls.append(("end", int(row["round"])))

    def on_run_end(self, loop: RoundLoop) -> None:
        self.calls.append(("run_end", None))


def in_process(grid_nodes: int = 4) -> Any:
    """A stand-in for `_simulate`: the server loop over in-process cohorts, no Ray."""

    def simulate(sc: Any, state: ServerRun) -> None:
        _server_loop(InProcessGrid(nodes=grid_nodes), sc, state)

    return simulate


EXPECTED = [(hook, rnd) for rnd in (1, 2, 3) for hook in ("start", "replies", "end")]


def test_server_run_calls_the_callers_observers_in_order(
    tmp_path: Path, flower_run_context: Any
) -> None:
    sc = small_scenario(**TINY)
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    rundir.write_text(rundir.scenario, sc.to_toml())
    rec = Recorder()
    state = ServerRun(
        sc, rundir, RunProgress(sc, enabled=False), clients=client_side(), observers=[rec]
    )
    try:
        _server_loop(InProcessGrid(nodes=4), sc, state)
    finally:
        state.close()
    assert rec.calls == [*EXPECTED, ("run_end", None)]
    # after fedsim's own: each round's row was written before the caller saw it
    assert [m["round"] for m in state.metrics] == [1, 2, 3]


def test_run_passes_observers_to_the_loop(
    tmp_path: Path, flower_run_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation, "_simulate", in_process())
    rec = Recorder()
    result = simulation.run(
        small_scenario(**TINY),
        tmp_path / "run",
        clients=client_side(),
        progress=False,
        observers=[rec],
    )
    assert rec.calls == [*EXPECTED, ("run_end", None)]
    assert [m["round"] for m in result.metrics] == [1, 2, 3]


def test_a_stopped_round_is_not_started_for_the_callers_observers(
    tmp_path: Path, flower_run_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both clients reach epsilon ~1.69 in round 1 and ~1.95 in round 2: fedsim's
    # BudgetStop ends the run before round 2, and the caller's observer (after fedsim's)
    # never hears of a round 2.
    monkeypatch.setattr(simulation, "_simulate", in_process())
    rec = Recorder()
    sc = small_scenario(rounds=3, population=2, sampling__clients_per_round=2, dp__max_epsilon=1.8)
    result = simulation.run(
        sc, tmp_path / "run", clients=client_side(), progress=False, observers=[rec]
    )
    assert [m["round"] for m in result.metrics] == [1]
    assert "dp.max_epsilon" in (result.summary["stopped_early"] or "")
    assert rec.calls == [("start", 1), ("replies", 1), ("end", 1), ("run_end", None)]
