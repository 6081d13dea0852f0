"""Scenario validation: every bad field is named, with its value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import Scenario, ScenarioError, apply_override, dumps_toml

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_shipped_scenarios_validate() -> None:
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        scenario = Scenario.from_toml(path)
        assert scenario.rounds >= 1, path


def test_defaults_and_derived_cohort() -> None:
    sc = Scenario.from_dict({"population": 50, "sampling": {"fraction": 0.29}})
    # 50 * 0.29 = 14.499... in floating point; the cohort is still 14
    assert sc.clients_per_round == 14
    assert Scenario.from_dict({"population": 7}).clients_per_round == 7


def test_every_bad_field_is_named_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
rounds = 0
population = 10
colour = "blue"
[sampling]
clients_per_round = 20
[dp]
mode = "sample"
noise_multiplier = -1.0
delta = 1.5
[train]
batch_size = "big"
""",
    )
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    text = str(info.value)
    for needle in (
        "rounds = 0",
        "colour",
        "unknown key",
        "dp.noise_multiplier = -1.0",
        "dp.delta = 1.5",
        "train.batch_size = 'big'",
    ):
        assert needle in text, (needle, text)
    assert len(info.value.problems) >= 5
    assert str(path) in text


def test_cross_field_checks() -> None:
    with pytest.raises(
        ScenarioError, match=r"clients_per_round = 20: more than the population \(10\)"
    ):
        Scenario.from_dict({"population": 10, "sampling": {"clients_per_round": 20}})
    with pytest.raises(ScenarioError, match="needs noise_multiplier or target_epsilon"):
        Scenario.from_dict({"dp": {"mode": "sample"}})
    with pytest.raises(ScenarioError, match="not both"):
        Scenario.from_dict(
            {"dp": {"mode": "sample", "noise_multiplier": 1.0, "target_epsilon": 3.0}}
        )
    with pytest.raises(ScenarioError, match="digits has no natural clients"):
        Scenario.from_dict({"data": {"partition": "natural"}})


def test_model_options_checked_before_start() -> None:
    with pytest.raises(ScenarioError, match="model"):
        Scenario.from_dict({"model": {"name": "cnn", "widht": 3}})
    with pytest.raises(ScenarioError, match="model"):
        Scenario.from_dict({"model": {"name": "resnet"}})


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        Scenario.from_toml(write(tmp_path, "rounds = = 3"))
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        Scenario.from_toml(tmp_path / "missing.toml")


def test_overrides_parse_like_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'rounds = 2\n[dp]\nmode = "sample"\nnoise_multiplier = 1.0\n')
    sc = Scenario.from_toml(
        path, ["rounds=5", "dp.noise_multiplier=1.2", "name=abc", "backend.clients_per_message=3"]
    )
    assert (sc.rounds, sc.dp.noise_multiplier, sc.name) == (5, 1.2, "abc")
    assert sc.backend.clients_per_message == 3
    with pytest.raises(ScenarioError, match="expected key.path=value"):
        Scenario.from_toml(path, ["rounds"])
    data = {"a": 1}
    with pytest.raises(ValueError, match="is a value, not a table"):
        apply_override(data, "a.b=2")


def test_from_dict_does_not_mutate_input() -> None:
    raw = {"dp": {"mode": "off"}}
    Scenario.from_dict(raw, overrides=["dp.delta=0.001"])
    assert raw == {"dp": {"mode": "off"}}


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    sc = Scenario.from_dict(
        {
            "rounds": 4,
            "dp": {"mode": "sample", "target_epsilon": 2.5},
            "model": {"name": "cnn", "channels": [8]},
        }
    )
    again = Scenario.from_toml(write(tmp_path, sc.to_toml()))
    assert again == sc
    assert dumps_toml({"a": {"b": [1, 2]}, "c": True}).startswith("c = true")


def test_override_none_removes_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[dp]\nmode = "sample"\nnoise_multiplier = 1.0\n')
    sc = Scenario.from_toml(path, ["dp.noise_multiplier=none", "dp.target_epsilon=3"])
    assert sc.dp.noise_multiplier is None and sc.dp.target_epsilon == 3.0
