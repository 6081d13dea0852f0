"""Bad sizes and values are refused by validation, before anything starts or is written."""

from __future__ import annotations

from typing import Any

import pytest

from fedsim.config import Scenario, ScenarioError

# A DP scenario in which every float field listed below is in use.
DP_BASE: dict[str, Any] = {"dp": {"mode": "sample", "noise_multiplier": 1.0}}

FLOAT_FIELDS = [
    "dp.noise_multiplier",
    "backend.cpus_per_worker",
    "train.lr",
    "dp.max_grad_norm",
    "backend.round_timeout",
    "dp.max_epsilon",
    "faults.round_deadline",
    "faults.speed_sigma",
    "data.alpha",
]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+inf"])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_non_finite_float_is_refused(field: str, value: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(DP_BASE, overrides=[f"{field}={value}"])
    text = str(info.value)
    assert f"{field} = " in text, text
    assert "finite" in text, text


def test_non_finite_float_in_toml_file(tmp_path: Any) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[train]\nlr = inf\n[data]\nalpha = nan\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    assert len(info.value.problems) == 2
    assert "train.lr = inf" in str(info.value) and "data.alpha = nan" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "strategy.options.eta=inf",
        "model.hidden=nan",
        "data.partition_options.alpha=-inf",
    ],
)
def test_non_finite_float_in_free_form_options_is_refused(override: str) -> None:
    raw = {"strategy": {"name": "fedadam"}, "data": {"partition_backend": "flwr"}}
    if override.startswith("data."):
        raw["data"]["partition"] = "dirichlet"
    key = override.partition("=")[0]
    with pytest.raises(ScenarioError, match=rf"{key} = .*finite"):
        Scenario.from_dict(raw, overrides=[override])


@pytest.mark.parametrize("mode", ["sample", "user"])
@pytest.mark.parametrize("noise", [0.0, -0.0])
def test_zero_noise_in_a_dp_mode_points_to_mode_off(mode: str, noise: float) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({"dp": {"mode": mode, "noise_multiplier": noise}})
    text = str(info.value)
    assert "dp.noise_multiplier" in text and 'dp.mode = "off"' in text, text


def test_zero_noise_without_dp_is_fine() -> None:
    sc = Scenario.from_dict({"dp": {"mode": "off", "noise_multiplier": 0.0}})
    assert sc.dp.noise_multiplier == 0.0


@pytest.mark.parametrize(
    "item", ["rounds=5\nseed=3", "name=abc\r\nrounds=9", "rounds=5\n", "dp.\nmode=off"]
)
def test_override_with_a_line_break_is_refused(item: str) -> None:
    # Before: TOML parsed "5\nseed=3" as 5 and dropped the rest without a word.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({}, overrides=[item])
    text = str(info.value)
    assert "line break" in text and "one key=value per --set" in text, text


def test_override_with_a_tab_in_a_string_still_works() -> None:
    sc = Scenario.from_dict({}, overrides=['data.hub.subset="a\tb"'])
    assert sc.data.hub.subset == "a\tb"
