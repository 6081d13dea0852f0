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


UPDATES = [
    (np.array([1.0, 0.0]), 1),
    (np.array([2.0, 8.0]), 1),
    (np.array([3.0, 1.0]), 1),
    (np.array([4.0, 2.0]), 1),
    (np.array([100.0, -50.0]), 1),
]


def aggregate(name: str, options: dict[str, Any] | None = None) -> np.ndarray:
    sc = small_scenario(
        population=5,
        sampling__clients_per_round=5,
        strategy__name=name,
        strategy__options=options or {},
    )
    strategy = build_strategy(sc)
    arrays, _ = strategy.aggregate_train(1, replies_for(strategy, UPDATES))
    return arrays["w"].numpy()


def test_trimmed_mean_krum_and_server_momentum_by_hand(flower_run_context: Any) -> None:
    # FedTrimmedAvg, beta 0.2 of 5: drop the lowest and highest value per coordinate
    np.testing.assert_allclose(aggregate("fedtrimmedavg", {"beta": 0.2}), [3.0, 1.0])
    # Krum with f = 1: score = sum of squared distances to the n - f - 2 = 2 nearest;
    # client 2 ([3, 1]) has the smallest score (1+1 to [4, 2] and [2, 0]... computed below)
    pts = np.array([u for u, _ in UPDATES])
    d = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    scores = [np.sort(row[row > 0])[:2].sum() for row in d]
    np.testing.assert_allclose(
        aggregate("krum", {"num_malicious_nodes": 1}), pts[int(np.argmin(scores))]
    )
    # FedAvgM from zero global weights with lr 1, momentum 0: the plain mean
    np.testing.assert_allclose(
        aggregate("fedavgm", {"server_momentum": 0.0}), pts.mean(axis=0), rtol=1e-6
    )


def test_fedadam_first_step_by_hand(flower_run_context: Any) -> None:
    # FedOpt (Reddi et al.): delta = mean - x; m = (1-b1) delta; v = (1-b2) delta^2;
    # x' = x + eta_r * m / (sqrt(v) + tau), with x = 0 and Flower's bias correction
    # eta_r = eta * sqrt(1 - b2^(r+1)) / (1 - b1^(r+1)) at round r = 1 (flwr fedadam.py)
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    delta = np.array([u for u, _ in UPDATES]).mean(axis=0)
    m, v = (1 - b1) * delta, (1 - b2) * delta**2
    eta_r = eta * np.sqrt(1 - b2**2) / (1 - b1**2)
    want = eta_r * m / (np.sqrt(v) + tau)
    got = aggregate("fedadam", {"eta": eta, "beta_1": b1, "beta_2": b2, "tau": tau})
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("sampling, q", [("poisson", 0.25), ("fixed", 1.0)])
def test_user_level_target_epsilon_holds_over_every_round(sampling: str, q: float) -> None:
    from fedsim.privacy import epsilon, noise_multiplier_for
    from fedsim.strategies.factory import user_noise_multiplier

    sc = small_scenario(
        rounds=7,
        population=20,
        sampling__clients_per_round=5,
        dp__mode="user",
        dp__noise_multiplier=None,
        dp__target_epsilon=3.0,
        dp__client_sampling=sampling,
    )
    z = user_noise_multiplier(sc)
    # one release per round, all of them: the number the factory always gave
    assert z == noise_multiplier_for(
        target_epsilon=3.0, delta=sc.dp.delta, sample_rate=q, steps=7, accountant="rdp"
    )
    assert 2.9 < epsilon(noise_multiplier=z, sample_rate=q, steps=7, delta=sc.dp.delta) <= 3.0
    assert user_noise_multiplier(small_scenario(dp__mode="user", dp__noise_multiplier=1.7)) == 1.7
