"""scenarios/reproduce_*.py: their scenarios, straggler deadlines, tables and plots
(no runs), and a --quick smoke run of each script (integration: starts Ray)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fedsim.config import Scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCENARIOS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_fedprox_deadline_makes_the_stated_share_late() -> None:
    fp = load("reproduce_fedprox")
    times = [float(t) for t in range(1, 31)]  # 30 devices, distinct durations
    assert fp.deadline_for(0.0, times) is None
    for share, late in ((0.5, 15), (0.9, 27)):
        deadline = fp.deadline_for(share, times)
        assert sum(t > deadline for t in times) == late


def test_fedprox_scenarios_follow_the_paper_and_differ_as_stated() -> None:
    fp = load("reproduce_fedprox")
    base = fp.base_scenario(40, quick=False)
    times = fp.durations(base)
    assert len(times) == 30 and all(t > 0 for t in times)
    avg = Scenario.from_dict(fp.scenario_for("fedavg", 0.9, 40, False, times))
    prox = Scenario.from_dict(fp.scenario_for("fedprox", 0.9, 40, False, times))
    for sc in (avg, prox):
        assert (sc.population, sc.sampling.clients_per_round) == (30, 10)
        assert (sc.train.epochs, sc.train.batch_size, sc.train.lr) == (20, 10, 0.01)
        assert sc.faults.round_deadline == fp.deadline_for(0.9, times)
        assert sc.data.synthetic.alpha == 1.0 and sc.data.synthetic.beta == 1.0
    assert not avg.faults.accept_late and avg.train.min_epochs is None
    assert avg.strategy.name == "fedavg"
    assert prox.faults.accept_late and prox.train.min_epochs == 1
    assert prox.strategy.name == "fedprox" and prox.strategy.options == {"proximal_mu": 1.0}
    clean = Scenario.from_dict(fp.scenario_for("fedavg", 0.0, 40, False, times))
    assert clean.faults.round_deadline is None


def test_fedprox_summary_counts_late_drops() -> None:
    fp = load("reproduce_fedprox")
    metrics = [
        {"round": 1, "accuracy": 0.2, "train_loss": 2.0, "clients_late": 2},
        {"round": 2, "accuracy": 0.4, "train_loss": 1.5, "clients_late": 0},
    ]
    row = fp.summarize("fedavg", 0.5, {"metrics": metrics, "wall_seconds": 3.0})
    assert row["final_accuracy"] == 0.4 and row["final_train_loss"] == 1.5
    assert row["dropped_late_per_round"] == 1.0


def test_dp_fedavg_scenarios_change_only_noise_and_seed(tmp_path: Path) -> None:
    dp = load("reproduce_dp_fedavg")
    ref = dp.scenario_for(1.3, 0, None, quick=False)
    sc = Scenario.from_dict(ref)
    assert (sc.population, sc.sampling.clients_per_round, sc.rounds) == (1000, 200, 25)
    assert sc.dp.mode == "user" and sc.dp.client_sampling == "poisson"
    other = dp.scenario_for(2.0, 1, None, quick=False)
    assert other["dp"]["noise_multiplier"] == 2.0 and other["seed"] == 1
    assert Scenario.from_dict(dp.scenario_for(None, 0, None, False)).dp.mode == "off"
    rows = [
        {"noise": 1.0, "seed": 0, "accuracy": 0.8, "epsilon": 9.0, "wall_seconds": 1},
        {"noise": 1.0, "seed": 1, "accuracy": 0.6, "epsilon": 9.0, "wall_seconds": 1},
        {"noise": None, "seed": 0, "accuracy": 0.9, "epsilon": None, "wall_seconds": 1},
    ]
    lines = dp.by_noise(rows)
    assert lines[0]["mean_accuracy"] == pytest.approx(0.7)
    assert lines[0]["accuracies"] == [0.8, 0.6] and lines[1]["epsilon"] is None
    assert dp.plot(rows, tmp_path).read_bytes()[:8] == PNG


def test_leaf_statistics_match_the_loader(capsys: pytest.CaptureFixture[str]) -> None:
    ls = load("reproduce_leaf_shakespeare")
    stats = ls.statistics({"min_samples": 100, "max_samples_per_role": None})
    assert stats["users"] == 1048 and stats["plays"] == 37
    assert 4_100_000 < stats["samples"] < 4_200_000  # LEAF: 4,226,158
    ls.print_stats({"uncapped": stats})
    text = capsys.readouterr().out
    assert "1,129" in text and "4,226,158" in text  # LEAF's Table 1
    assert "1,048" in text and f"{stats['samples']:,}" in text


def _smoke(script: str, tmp_path: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(SCENARIOS / f"{script}.py"), "--quick"]
    cmd += ["--out", str(tmp_path / "runs"), "--results", str(tmp_path), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    name = script.removeprefix("reproduce_")
    assert (tmp_path / f"reproduce_{name}.png").read_bytes()[:8] == PNG
    payload = json.loads((tmp_path / f"reproduce_{name}.json").read_text())
    assert payload["quick"] is True and payload["machine"]["cpus"] >= 1
    return payload


@pytest.mark.integration
def test_fedprox_quick(tmp_path: Path) -> None:
    payload = _smoke("reproduce_fedprox", tmp_path)
    rows = {(r["method"], r["stragglers"]) for r in payload["rows"]}
    assert rows == {("fedavg", 0.0), ("fedprox", 0.0), ("fedavg", 0.9), ("fedprox", 0.9)}
    by = {(r["method"], r["stragglers"]): r for r in payload["rows"]}
    assert by[("fedavg", 0.9)]["dropped_late_per_round"] > 5  # 27 of 30 devices late
    assert by[("fedprox", 0.9)]["dropped_late_per_round"] == 0  # kept


@pytest.mark.integration
def test_dp_fedavg_quick(tmp_path: Path) -> None:
    payload = _smoke("reproduce_dp_fedavg", tmp_path, "--seeds", "0")
    eps = [r["epsilon"] for r in payload["rows"]]
    assert eps[0] > eps[1] > 0 and eps[2] is None  # z = 1, z = 2, then no DP


@pytest.mark.integration
def test_leaf_shakespeare_quick(tmp_path: Path) -> None:
    payload = _smoke("reproduce_leaf_shakespeare", tmp_path)
    assert payload["statistics"][next(iter(payload["statistics"]))]["users"] == 1178
    assert len(payload["accuracy_curve"]) == 1


def test_fedprox_deadline_counts_the_speeds_the_run_uses() -> None:
    """The deadline for x % stragglers makes x % of the devices late under the run's
    own speeds (steps x LogNormal speed), not under the step counts alone."""
    from fedsim.clients.dp import local_steps
    from fedsim.clients.worker import client_speed, load_scenario_data
    from fedsim.shards import build_shards

    fp = load("reproduce_fedprox")
    times = fp.durations(fp.base_scenario(40, quick=False))
    for share, late in ((0.5, 15), (0.9, 27)):
        sc = Scenario.from_dict(fp.scenario_for("fedavg", share, 40, False, times))
        sizes = build_shards(sc, load_scenario_data(sc)).sizes()
        run_times = [local_steps(sc, int(n)) * client_speed(sc, k) for k, n in enumerate(sizes)]
        assert sum(t > sc.faults.round_deadline for t in run_times) == late


def test_leaf_time_budget_stops_before_a_round_that_would_overrun() -> None:
    ls = load("reproduce_leaf_shakespeare")
    budget = ls.TimeBudget(100.0)
    assert budget.on_round_start(None, 1) is None  # round 1 always runs
    budget.on_round_end(None, {"round": 1})
    budget.round_seconds[-1] = 30.0
    budget.t0 -= 60.0  # 60 s spent: a 30 s round ends at 90 s, within 100
    assert budget.on_round_start(None, 2) is None
    budget.on_round_end(None, {"round": 2})
    budget.round_seconds[-1] = 30.0
    budget.t0 -= 20.0  # 80 s spent: the next round would end at 110 s
    stop = budget.on_round_start(None, 3)
    assert stop is not None and "after round 2" in stop.reason and not stop.interrupted
    assert len(budget.round_ends) == 2
