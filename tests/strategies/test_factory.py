"""Flower strategies by name: built with validated options, one aggregation by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsim.config import ScenarioError
from fedsim.strategies import STRATEGIES, build_strategy
from tests.conftest import small_scenario
from tests.strategies.test_dp_fedavg import Nodes


def replies_for(strategy: Any, updates: list[tuple[np.ndarray, int]]) -> list[Message]:
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes(len(updates))))
    out = []
    for msg, (w, n) in zip(msgs, updates, strict=True):
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(w.astype(np.float32))}),
                "metrics": MetricRecord({"num-examples": n, "train_loss": 1.0}),
            }
        )
        out.append(Message(content, reply_to=msg))
    return out


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_builds_with_exact_cohort(name: str) -> None:
    sc = small_scenario(strategy__name=name)
    strategy = build_strategy(sc)
    assert type(strategy) is STRATEGIES[name]
    assert strategy.min_train_nodes == sc.clients_per_round


def test_fedavg_weighted_mean_and_fedmedian_by_hand(flower_run_context: Any) -> None:
    updates = [(np.array([1.0, 0.0]), 1), (np.array([3.0, 2.0]), 3), (np.array([10.0, 4.0]), 0)]
    sc = small_scenario(population=3, sampling__clients_per_round=3)
    avg, _ = build_strategy(sc).aggregate_train(1, replies_for(build_strategy(sc), updates))
    # weights 1/4, 3/4, 0
    np.testing.assert_allclose(avg["w"].numpy(), [2.5, 1.5])
    med_strategy = build_strategy(
        small_scenario(population=3, sampling__clients_per_round=3, strategy__name="fedmedian")
    )
    med, _ = med_strategy.aggregate_train(1, replies_for(med_strategy, updates))
    np.testing.assert_allclose(med["w"].numpy(), [3.0, 2.0])


def test_bad_options_are_scenario_errors() -> None:
    with pytest.raises(ScenarioError, match="strategy.options.mu: not an option of FedProx"):
        small_scenario(strategy__name="fedprox", strategy__options={"mu": 0.1})
    with pytest.raises(ScenarioError, match="expected a number"):
        small_scenario(strategy__name="fedadam", strategy__options={"eta": "fast"})
    with pytest.raises(ScenarioError, match="strategy.name"):
        small_scenario(strategy__name="fedsgd")
    with pytest.raises(ScenarioError, match="user-level DP-FedAvg replaces the aggregation"):
        small_scenario(strategy__name="krum", dp__mode="user")
