"""The server loop over in-process cohorts (no Ray): budgets and user-level releases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedsim.cli.progress import RunProgress
from fedsim.engine.simulation import ServerRun, _server_loop
from fedsim.launch import client_side
from fedsim.privacy import epsilon
from fedsim.rundir import RunDir, read_jsonl
from tests.conftest import small_scenario
from tests.test_grid import InProcessGrid


def serve(tmp_path: Path, **overrides: Any) -> ServerRun:
    sc = small_scenario(**overrides)
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    rundir.write_text(rundir.scenario, sc.to_toml())
    state = ServerRun(sc, rundir, RunProgress(sc, enabled=False), clients=client_side())
    try:
        _server_loop(InProcessGrid(nodes=8), sc, state)
    finally:
        state.close()
    return state


def test_no_ledger_line_exceeds_the_budget_over_many_rounds(
    tmp_path: Path, flower_run_context: Any
) -> None:
    budget = 4.0
    state = serve(
        tmp_path,
        rounds=40,
        population=6,
        sampling__clients_per_round=2,
        dp__max_epsilon=budget,
        dp__noise_multiplier=1.0,
        model__channels=[2],
        model__hidden=0,
    )
    lines = read_jsonl(state.rundir.ledger)
    assert lines, "some rounds must have run"
    assert max(line["epsilon"] for line in lines) <= budget
    # it ran until too few clients were left, and said so
    assert state.stopped is not None and "dp.max_epsilon = 4" in state.stopped
    assert len(state.metrics) < 40
    # every client was used close to its budget: one more participation would exceed it
    per_client: dict[int, list[dict]] = {}
    for line in lines:
        per_client.setdefault(line["client"], []).append(line)
    exhausted = 0
    for client_lines in per_client.values():
        last = client_lines[-1]
        more = epsilon(
            noise_multiplier=last["noise_multiplier"],
            sample_rate=last["sample_rate"],
            steps=sum(x["steps"] for x in client_lines) + last["steps"],
            delta=1e-5,
        )
        exhausted += more > budget
    assert exhausted >= 6 - 1  # fewer than 2 clients remained


def test_user_level_poisson_run_records_one_release_per_round(
    tmp_path: Path, flower_run_context: Any
) -> None:
    state = serve(
        tmp_path,
        rounds=4,
        population=20,
        sampling__clients_per_round=5,
        dp__mode="user",
        dp__noise_multiplier=1.0,
        dp__max_grad_norm=0.5,
    )
    lines = read_jsonl(state.rundir.ledger)
    assert [x["round"] for x in lines] == [1, 2, 3, 4]
    assert all(x["level"] == "user" and x["sampling"] == "poisson" for x in lines)
    assert all(x["sample_rate"] == pytest.approx(0.25) for x in lines)
    want = epsilon(noise_multiplier=1.0, sample_rate=0.25, steps=4, delta=1e-5)
    assert lines[-1]["epsilon"] == pytest.approx(want)
    # clients trained are the Poisson cohort the release names
    for row, line in zip(state.metrics, lines, strict=True):
        assert row["clients_trained"] + row["clients_failed"] == line["clients_sampled"]
        assert row["epsilon_max"] == pytest.approx(line["epsilon"])


def test_user_level_budget_stops_before_exceeding(tmp_path: Path, flower_run_context: Any) -> None:
    one = epsilon(noise_multiplier=1.0, sample_rate=0.25, steps=2, delta=1e-5)
    state = serve(
        tmp_path,
        rounds=10,
        population=20,
        sampling__clients_per_round=5,
        dp__mode="user",
        dp__noise_multiplier=1.0,
        dp__max_epsilon=one * 1.0001,
    )
    lines = read_jsonl(state.rundir.ledger)
    assert len(lines) == 2 and lines[-1]["epsilon"] <= one * 1.0001
    assert "user-level release" in (state.stopped or "")


def _halve_configured_noise(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """Configure client 0's DP-SGD with half the planned noise, inside its engine."""
    if engine == "sequential":
        from fedsim.clients.trainer import LocalTrainer

        real = LocalTrainer._configure_dp

        def configure(self: LocalTrainer, plan: Any, n: int, client: int, rnd: int) -> None:
            real(self, plan, n, client, rnd)
            if client == 0:
                self.optimizer.noise_multiplier = plan.noise_multiplier / 2  # type: ignore[attr-defined]

        monkeypatch.setattr(LocalTrainer, "_configure_dp", configure)
        return
    import dataclasses

    from fedsim.clients.vectorised import VectorisedTrainer

    real_client = VectorisedTrainer._client

    def client(self: VectorisedTrainer, job: Any) -> Any:
        c = real_client(self, job)
        if job.client == 0:  # the plan its DP-SGD applies (noise std z*C)
            c.plan = dataclasses.replace(c.plan, noise_multiplier=c.plan.noise_multiplier / 2)
        return c

    monkeypatch.setattr(VectorisedTrainer, "_client", client)


@pytest.mark.parametrize("engine", ["sequential", "vectorised"])
def test_a_client_running_other_noise_than_planned_is_a_mismatch(
    tmp_path: Path, flower_run_context: Any, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    # The client reports what its DP optimizer ran, so the server's check against its
    # own plan sees the halved noise (a report recomputed from the plan would not).
    _halve_configured_noise(monkeypatch, engine)
    state = serve(
        tmp_path,
        rounds=1,
        population=4,
        sampling__clients_per_round=4,
        backend__engine=engine,
        train__max_steps=2,
    )
    lines = read_jsonl(state.rundir.ledger)
    assert sorted(line["client"] for line in lines) == [0, 1, 2, 3]
    planned = state.accounting.plan(0).noise_multiplier
    for line in lines:
        if line["client"] == 0:
            assert line["noise_multiplier"] == pytest.approx(planned / 2)
            assert "noise_multiplier" in line["mismatch"]
        else:
            assert "mismatch" not in line
    assert state.accounting.mismatches == 1
