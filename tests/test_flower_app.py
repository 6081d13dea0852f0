"""The Flower App's run config: scenario path, overrides, and the federation size check."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import Scenario, ScenarioError
from fedsim.flower_app import FlowerAppError, check_supernodes, scenario_from_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_run_config_overrides_rounds_and_set_relative_to_the_app_dir() -> None:
    sc = scenario_from_run_config(
        {"scenario": "scenarios/quickstart.toml", "rounds": 2, "set": "dp.mode=off; seed=7"},
        app_dir=ROOT,
    )
    assert (sc.name, sc.rounds, sc.dp.mode, sc.seed) == ("quickstart", 2, "off", 7)
    own = Scenario.from_toml(ROOT / "scenarios/quickstart.toml").rounds
    assert scenario_from_run_config({"rounds": 0}, app_dir=ROOT).rounds == own


def test_bad_run_config_names_the_key_and_what_is_allowed() -> None:
    with pytest.raises(FlowerAppError, match="unknown run config key.*round.*reads scenario"):
        scenario_from_run_config({"round": 2}, app_dir=ROOT)
    with pytest.raises(FlowerAppError, match="rounds = 'two'"):
        scenario_from_run_config({"rounds": "two"}, app_dir=ROOT)
    with pytest.raises(ScenarioError):
        scenario_from_run_config({"scenario": "scenarios/missing.toml"}, app_dir=ROOT)


def test_too_few_supernodes_is_refused_with_the_number_needed() -> None:
    sc = scenario_from_run_config({}, app_dir=ROOT)  # 2 workers: 2 cohorts per round
    check_supernodes(sc, 2)
    with pytest.raises(FlowerAppError, match="has 1 supernode.*num-supernodes=2"):
        check_supernodes(sc, 1)
