"""Shared fixtures: small scenarios and a Flower run context for unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from fedsim.config import Scenario


def small_scenario(**overrides: Any) -> Scenario:
    """A tiny digits scenario; keyword overrides are dotted keys, e.g. dp__mode='off'."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "rounds": 2,
        "population": 6,
        "sampling": {"clients_per_round": 4},
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "cnn", "channels": [4, 8], "hidden": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.1},
        "dp": {"mode": "sample", "noise_multiplier": 1.0, "max_grad_norm": 1.0},
        "backend": {"workers": 2},
    }
    for key, value in overrides.items():
        node = raw
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return Scenario.from_dict(raw)


@pytest.fixture
def flower_run_context() -> Any:
    """Flower builds Messages only inside a run (they carry its id): fake one."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 12345, 1, 1
    yield TaskIdentity
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved
