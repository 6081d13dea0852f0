"""Random scenario dicts: only a valid Scenario or a ScenarioError, never anything else."""

from __future__ import annotations

import math
import typing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fedsim.config import Scenario, ScenarioError

SECTIONS = {
    "sampling": ["clients_per_round", "fraction"],
    "data": ["name", "partition", "alpha", "test_fraction", "root", "min_partition_size"],
    "model": ["name", "channels", "hidden"],
    "train": ["epochs", "batch_size", "lr", "optimizer", "momentum", "max_steps", "min_epochs"],
    "strategy": ["name", "options"],
    "dp": [
        "mode",
        "noise_multiplier",
        "target_epsilon",
        "max_grad_norm",
        "delta",
        "accountant",
        "max_epsilon",
        "client_sampling",
        "adaptive_clipping",
    ],
    "backend": [
        "workers",
        "cpus_per_worker",
        "clients_per_message",
        "ray_address",
        "round_timeout",
    ],
    "evaluation": ["every", "federated_fraction"],
    "faults": ["fail_probability", "dropout_probability", "round_deadline", "speed_sigma"],
}
TOP = ["name", "seed", "rounds", "population", "bogus"]

values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 50), st.floats(-2, 2),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.sampled_from(["digits", "cnn", "fedavg", "sample", "user", "off", "iid", "auto", "x"]),
    st.lists(st.integers(-1, 20), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                 st.integers(), max_size=2),
)  # fmt: skip


@st.composite
def scenario_dicts(draw: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP), max_size=4)):
        raw[key] = draw(values)
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4)):
        keys = draw(st.lists(st.sampled_from(SECTIONS[section] + ["typo"]), max_size=3))
        raw[section] = draw(st.one_of(values, st.fixed_dictionaries({k: values for k in keys})))
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_dicts())
def test_random_scenarios_validate_or_raise_scenario_error(raw: dict[str, Any]) -> None:
    try:
        scenario = Scenario.from_dict(raw)
    except ScenarioError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    assert 1 <= scenario.clients_per_round <= scenario.population
    # inf and nan never get through, wherever they were put.
    assert _all_finite(raw), raw
    assert _all_finite(scenario.model_dump(mode="python")), raw
    Scenario.from_dict(scenario.model_dump(mode="json"))  # a valid scenario round-trips


def _all_finite(data: Any) -> bool:
    if isinstance(data, float):
        return math.isfinite(data)
    if isinstance(data, dict):
        return all(_all_finite(v) for v in data.values())
    if isinstance(data, list):
        return all(_all_finite(v) for v in data)
    return True


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every float field in the schema (sections walked recursively)."""
    out = []
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) or (info.annotation,)
        sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections:
            out += _float_fields(sections[0], f"{prefix}{name}.")
        elif float in args:
            out.append(f"{prefix}{name}")
    return out


FLOAT_FIELDS = _float_fields(Scenario)


def test_schema_has_the_float_fields_the_issue_names() -> None:
    for name in ("dp.noise_multiplier", "backend.cpus_per_worker", "data.alpha"):
        assert name in FLOAT_FIELDS


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(FLOAT_FIELDS),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.sampled_from(["off", "sample", "user"]),
)
def test_any_non_finite_float_field_is_refused(field: str, value: float, mode: str) -> None:
    raw: dict[str, Any] = {"dp": {"mode": mode, "noise_multiplier": 1.0}}
    *path, last = field.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    try:
        Scenario.from_dict(raw)
    except ScenarioError as exc:
        assert any(p.startswith(f"{field} = ") and "finite" in p for p in exc.problems), exc
    else:
        raise AssertionError(f"{field} = {value} was accepted")
