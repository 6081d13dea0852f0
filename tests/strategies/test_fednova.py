"""FedNova: normalized averaging by hand, FedAvg when steps are equal, momentum norm."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedsim.strategies.fednova import FedNova, step_norm


class Nodes:
    """The part of a Grid a strategy's configure_train uses."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(self.n))


def reply(to: Message, y: Sequence[float], steps: int, n: int, loss: float = 1.0) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(y, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": n, "train_loss": loss, "local_steps": steps}),
        }
    )
    return Message(content, reply_to=to)


def configure(strategy: FedAvg, x: Sequence[float], n_nodes: int = 2) -> list[Message]:
    random.seed(0)
    arrays = ArrayRecord({"w": Array(np.asarray(x, dtype=np.float32))})
    msgs = strategy.configure_train(1, arrays, ConfigRecord(), Nodes(n_nodes))
    return sorted(msgs, key=lambda m: m.metadata.dst_node_id)


def make(**kw: Any) -> FedNova:
    return FedNova(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2, **kw)


def test_different_steps_by_hand(flower_run_context: Any) -> None:
    s = make()
    a, b = configure(s, [1.0, 1.0])
    # A: 10 examples, 2 steps, y = (0.8, 1.2); B: 30 examples, 6 steps, y = (0.7, 1.3)
    arrays, metrics = s.aggregate_train(
        1, [reply(a, [0.8, 1.2], steps=2, n=10), reply(b, [0.7, 1.3], steps=6, n=30)]
    )
    # p = (1/4, 3/4); d_A = (0.2, -0.2)/2 = (0.1, -0.1); d_B = (0.3, -0.3)/6 = (0.05, -0.05)
    # tau_eff = 1/4 * 2 + 3/4 * 6 = 5; sum p d = (0.0625, -0.0625)
    np.testing.assert_allclose(arrays["w"].numpy(), [1 - 5 * 0.0625, 1 + 5 * 0.0625], rtol=1e-6)
    # FedAvg would give 1/4 * 0.8 + 3/4 * 0.7 = 0.725: the many-step client counts less
    assert arrays["w"].numpy()[0] == pytest.approx(0.6875)
    assert metrics["train_loss"] == pytest.approx(1.0)


def test_equal_steps_is_fedavg(flower_run_context: Any) -> None:
    nova, avg = make(), FedAvg(fraction_train=1.0, min_train_nodes=3, min_available_nodes=3)
    ys = [([0.5, -1.0, 2.0], 7), ([1.5, 0.25, -2.0], 11), ([3.0, 1.0, 0.0], 2)]
    got = {}
    for name, strategy in (("nova", nova), ("avg", avg)):
        msgs = configure(strategy, [1.0, 0.0, 0.5], n_nodes=3)
        replies = [reply(m, y, steps=5, n=n) for m, (y, n) in zip(msgs, ys, strict=True)]
        got[name] = strategy.aggregate_train(1, replies)[0]["w"].numpy()
    np.testing.assert_allclose(got["nova"], got["avg"], rtol=1e-6, atol=1e-7)


def test_step_norm_with_momentum_matches_the_formula_and_torch_sgd() -> None:
    assert step_norm(4) == 4.0
    assert step_norm(0, 0.9) == 0.0
    # rho = 0.5, tau = 3: gradient coefficients 1.75, 1.5, 1 -> 4.25
    assert step_norm(3, 0.5) == pytest.approx(1.75 + 1.5 + 1.0)
    assert step_norm(3, 0.5) == pytest.approx((3 - 0.5 * (1 - 0.5**3) / 0.5) / 0.5)
    # torch's SGD with momentum, a constant unit gradient, lr 1: moves by ||a||_1
    for rho, tau in ((0.9, 7), (0.5, 2), (0.0, 3)):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=1.0, momentum=rho)
        for _ in range(tau):
            p.grad = torch.ones(1)
            opt.step()
        assert -p.detach().item() == pytest.approx(step_norm(tau, rho), rel=1e-6)


def test_momentum_aggregation_by_hand(flower_run_context: Any) -> None:
    s = make(momentum=0.5)
    a, b = configure(s, [0.0])
    # equal weights; A: tau 1 -> a = 1, B: tau 2 -> a = 1.5 + 1 = 2.5
    arrays, _ = s.aggregate_train(
        1, [reply(a, [-0.1], steps=1, n=5), reply(b, [-0.5], steps=2, n=5)]
    )
    # d = (0.1, 0.2); tau_eff = (1 + 2.5) / 2 = 1.75; x = 0 - 1.75 * 0.15
    assert arrays["w"].numpy()[0] == pytest.approx(-1.75 * 0.15)


def test_failed_clients_are_skipped(flower_run_context: Any) -> None:
    s = make()
    a, b = configure(s, [1.0, 1.0])
    err = Message(Error(code=3, reason="injected failure"), reply_to=b)
    arrays, _ = s.aggregate_train(1, [reply(a, [0.8, 1.2], steps=2, n=10), err])
    np.testing.assert_allclose(arrays["w"].numpy(), [0.8, 1.2], rtol=1e-6)  # one client: y_A
    assert s.aggregate_train(1, [err]) == (None, None)


def test_bad_momentum_is_refused() -> None:
    with pytest.raises(ValueError, match="momentum"):
        make(momentum=1.0)


def test_fixed_point_on_quadratics_removes_the_step_weighting(flower_run_context: Any) -> None:
    """Local GD with lr on f_i = 1/2 ||w - b_i||^2 moves by (1 - (1 - lr)^tau_i)(b_i - x):
    FedAvg's fixed point weights b_i by 1 - (1 - lr)^tau_i (more steps, more weight),
    FedNova's by (1 - (1 - lr)^tau_i) / tau_i (about lr for every client)."""
    lr, steps = 0.05, [1, 5, 10, 20]
    opt = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 1.0], [2.0, -1.0]])

    def run(strategy: FedAvg) -> np.ndarray:
        x = np.zeros(2)
        for _ in range(100):
            msgs = configure(strategy, x.tolist(), n_nodes=4)
            replies = []
            for m in msgs:
                i = int(m.metadata.dst_node_id)
                y = x + (1 - (1 - lr) ** steps[i]) * (opt[i] - x)
                replies.append(reply(m, y.tolist(), steps=steps[i], n=1))
            x = strategy.aggregate_train(1, replies)[0]["w"].numpy().astype(np.float64)
        return x

    moved = np.array([1 - (1 - lr) ** t for t in steps])
    nova_w = moved / np.array(steps)
    fedavg = FedAvg(fraction_train=1.0, min_train_nodes=4, min_available_nodes=4)
    np.testing.assert_allclose(run(fedavg), moved @ opt / moved.sum(), atol=1e-5)
    np.testing.assert_allclose(run(make()), nova_w @ opt / nova_w.sum(), atol=1e-5)
    # the true optimum of the (equally weighted) objective is the mean of the b_i
    nova_err = np.linalg.norm(nova_w @ opt / nova_w.sum() - opt.mean(0))
    assert nova_err < 0.3 * np.linalg.norm(moved @ opt / moved.sum() - opt.mean(0))
