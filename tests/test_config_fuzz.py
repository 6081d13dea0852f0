"""Random scenario dicts: only a valid Scenario or a ScenarioError, never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    "backend": ["workers", "cpus_per_worker", "clients_per_message", "ray_address"],
    "evaluation": ["every", "federated_fraction"],
    "faults": ["fail_probability", "dropout_probability", "round_deadline"],
}
TOP = ["name", "seed", "rounds", "population", "bogus"]

values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 50), st.floats(-2, 2), st.just(float("nan")),
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
    Scenario.from_dict(scenario.model_dump(mode="json"))  # a valid scenario round-trips
