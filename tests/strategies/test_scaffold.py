"""SCAFFOLD (option II): corrections sent, new x, c and c_i, computed by hand."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedsim.engine.checkpoint import _decode, _encode
from fedsim.strategies.scaffold import CORRECTION_KEY, Scaffold


class Nodes:
    """The part of a Grid a strategy's configure_train uses: these client ids."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


def reply(to: Message, y: Sequence[float], steps: int, n: int = 10, loss: float = 1.0) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(y, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": n, "train_loss": loss, "local_steps": steps}),
        }
    )
    return Message(content, reply_to=to)


def failed(to: Message) -> Message:
    return Message(Error(code=3, reason="injected failure"), reply_to=to)


def weights(values: Sequence[float]) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))})


def configure(strategy: Scaffold, rnd: int, x: Sequence[float], ids: Sequence[int]) -> dict:
    random.seed(rnd)
    msgs = strategy.configure_train(rnd, weights(x), ConfigRecord(), Nodes(ids))
    return {int(m.metadata.dst_node_id): m for m in msgs}


def correction(msg: Message) -> list[float]:
    return msg.content[CORRECTION_KEY]["w"].numpy().tolist()


def make(**kw: Any) -> Scaffold:
    args: dict[str, Any] = {
        "fraction_train": 1.0,
        "min_train_nodes": 2,
        "min_available_nodes": 2,
        "population": 4,
        "local_lr": 0.1,
    }
    return Scaffold(**{**args, **kw})


def close(got: Any, want: Sequence[float]) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-6, atol=1e-6)


def test_two_rounds_by_hand(flower_run_context: Any) -> None:
    s = make()
    # Round 1: c = 0 and every c_i = 0, so every correction is zero.
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    assert sorted(msgs) == [1, 3]
    assert correction(msgs[1]) == correction(msgs[3]) == [0.0, 0.0]
    # client 1: K=2, y=(0.8, 2.2); client 3: K=4, y=(1.2, 1.6); local lr 0.1
    arrays, metrics = s.aggregate_train(
        1, [reply(msgs[1], [0.8, 2.2], steps=2), reply(msgs[3], [1.2, 1.6], steps=4)]
    )
    # x + mean(y_i - x) = (1, 2) + mean((-0.2, 0.2), (0.2, -0.4)) = (1, 1.9)
    close(arrays["w"].numpy(), [1.0, 1.9])
    # c_1 = (x - y_1) / (2 * 0.1) = (1, -1); c_3 = (x - y_3) / (4 * 0.1) = (-0.5, 1)
    close(s.c_clients[1]["w"], [1.0, -1.0])
    close(s.c_clients[3]["w"], [-0.5, 1.0])
    # c = 0 + |S|/N * mean(delta c_i) = 2/4 * (0.25, 0) = (0.125, 0)
    close(s.c_global["w"], [0.125, 0.0])
    assert metrics["train_loss"] == pytest.approx(1.0)
    assert "num-examples" not in metrics  # aggregated like FedAvg's metrics

    # Round 2: client 1 was seen, client 2 never was.
    msgs = configure(s, 2, [1.0, 1.9], [1, 2])
    close(correction(msgs[1]), [0.125 - 1.0, 0.0 + 1.0])  # c - c_1
    close(correction(msgs[2]), [0.125, 0.0])  # c - 0
    # client 2 fails; client 1: K=1, y=(0.9, 2.0)
    arrays, _ = s.aggregate_train(2, [reply(msgs[1], [0.9, 2.0], steps=1), failed(msgs[2])])
    close(arrays["w"].numpy(), [0.9, 2.0])  # the one successful update, whole
    # c_1+ = c_1 - c + (x - y)/(K lr) = (1, -1) - (0.125, 0) + (1, -1) = (1.875, -2)
    close(s.c_clients[1]["w"], [1.875, -2.0])
    # |S| = 1: c + 1/4 * (0.875, -1) = (0.34375, -0.25)
    close(s.c_global["w"], [0.34375, -0.25])
    assert 2 not in s.c_clients  # a failed client keeps c_i = 0
    close(s.c_clients[3]["w"], [-0.5, 1.0])  # absent clients keep theirs

    # Round 3: client 3's correction uses its stored c_3 and the new c.
    msgs = configure(s, 3, [0.9, 2.0], [3, 0])
    close(correction(msgs[3]), [0.34375 + 0.5, -0.25 - 1.0])
    close(correction(msgs[0]), [0.34375, -0.25])


def test_messages_share_model_and_config_and_unseen_share_correction(
    flower_run_context: Any,
) -> None:
    s = make()
    msgs = configure(s, 1, [1.0, 2.0], [0, 1, 2])
    contents = [m.content for m in msgs.values()]
    for c in contents:
        assert set(c.keys()) == {"arrays", "config", CORRECTION_KEY}
        assert c["arrays"] is contents[0]["arrays"]  # sent once per cohort by the grid
        assert c["config"] is contents[0]["config"]
        assert c["config"]["server-round"] == 1
    # never-seen clients all get c - 0: one record, sent once per cohort
    assert all(c[CORRECTION_KEY] is contents[0][CORRECTION_KEY] for c in contents)
    s.aggregate_train(1, [reply(msgs[0], [0.0, 0.0], steps=1)])
    msgs = configure(s, 2, [1.0, 2.0], [0, 1, 2])
    assert msgs[0].content[CORRECTION_KEY] is not msgs[1].content[CORRECTION_KEY]
    assert msgs[1].content[CORRECTION_KEY] is msgs[2].content[CORRECTION_KEY]


def test_global_lr_scales_x_step_only(flower_run_context: Any) -> None:
    s = make(global_lr=2.0)
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    arrays, _ = s.aggregate_train(
        1, [reply(msgs[1], [0.8, 2.2], steps=2), reply(msgs[3], [1.2, 1.6], steps=4)]
    )
    close(arrays["w"].numpy(), [1.0, 1.8])  # x + 2 * (0, -0.1)
    close(s.c_global["w"], [0.125, 0.0])  # as with global_lr = 1


def test_only_errors_changes_nothing(flower_run_context: Any) -> None:
    s = make()
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    assert s.aggregate_train(1, [failed(m) for m in msgs.values()]) == (None, None)
    assert s.c_clients == {}
    close(s.c_global["w"], [0.0, 0.0])


def test_reply_without_local_steps_is_refused(flower_run_context: Any) -> None:
    s = make()
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    bad = Message(
        RecordDict(
            {
                "arrays": weights([0.0, 0.0]),
                "metrics": MetricRecord({"num-examples": 3, "train_loss": 1.0}),
            }
        ),
        reply_to=msgs[1],
    )
    with pytest.raises(ValueError, match="local_steps"):
        s.aggregate_train(1, [bad])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="local_lr"):
        make(local_lr=0.0)
    with pytest.raises(ValueError, match="population"):
        make(population=0)


def test_client_variates_survive_the_checkpoint_encoding(flower_run_context: Any) -> None:
    s = make()
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    s.aggregate_train(1, [reply(msgs[1], [0.8, 2.2], steps=2), reply(msgs[3], [1.2, 1.6], steps=4)])
    again = make()
    again.c_global = _decode(_encode(s.c_global))
    again.c_clients_flat = _decode(_encode(s.c_clients_flat))
    assert sorted(again.c_clients) == [1, 3]
    for cid in (1, 3):
        np.testing.assert_array_equal(again.c_clients[cid]["w"], s.c_clients[cid]["w"])
    msgs_a = configure(s, 2, [1.0, 1.9], [1, 3])
    msgs_b = configure(again, 2, [1.0, 1.9], [1, 3])
    for cid in (1, 3):
        assert correction(msgs_a[cid]) == correction(msgs_b[cid])


# --------------------------------------------------------------------------- end to end


def _train_round(corr_value: float, flower_run_context: Any) -> dict[int, dict[str, np.ndarray]]:
    """One round through the real grid and cohort trainer (in process, no Ray)."""
    from fedsim.clients.trainer import build_global_model
    from fedsim.engine.grid import VirtualClientGrid
    from tests.conftest import small_scenario
    from tests.test_grid import InProcessGrid

    sc = small_scenario(dp__mode="off")
    inner = InProcessGrid(nodes=4)
    grid = VirtualClientGrid(
        inner,
        population=sc.population,
        workers=2,
        clients_per_message="auto",
        scenario_json=sc.fingerprint(),
    )
    grid.current_round = 1
    model = build_global_model(sc, (1, 8, 8), 10)
    s = Scaffold(
        fraction_train=1.0,
        min_train_nodes=2,
        min_available_nodes=2,
        population=sc.population,
        local_lr=sc.train.lr,
    )
    s.c_global = {
        k: np.full(v.shape, corr_value, np.float32) for k, v in model.state_dict().items()
    }
    random.seed(0)
    nodes = Nodes([0, 1, 2, 3])
    msgs = s.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), nodes)
    replies = grid.send_and_receive(msgs)
    # two cohorts of two: each carries model, config and the (shared) correction once
    assert len(inner.sent) == 2
    for sent in inner.sent:
        assert len([k for k in sent.content if k.startswith("r")]) == 3
    assert all(not r.has_error() for r in replies)
    return {
        int(r.metadata.src_node_id): {k: v.numpy() for k, v in r.content["arrays"].items()}
        for r in replies
    }


def test_trainer_applies_the_correction_it_is_sent(flower_run_context: Any) -> None:
    """grad += correction at every step: a positive correction pushes weights down."""
    plain = _train_round(0.0, flower_run_context)
    corrected = _train_round(1.0, flower_run_context)
    for cid in plain:
        diff = np.concatenate([(corrected[cid][k] - plain[cid][k]).ravel() for k in plain[cid]])
        # lr 0.1 x a few steps x correction 1: about -0.1 per step on every weight
        assert diff.mean() < -0.05, f"client {cid}: correction not applied ({diff.mean():.4f})"


# --------------------------------------------------------------------------- convergence


def run_quadratics(strategy: Any, curv: np.ndarray, opt: np.ndarray, steps: list[int]) -> Any:
    """Clients minimise a_i/2 ||w - b_i||^2 by K_i steps of local GD (+ correction)."""
    lr, x = 0.1, np.zeros(opt.shape[1])
    for rnd in range(1, 201):
        random.seed(rnd)
        arrays = ArrayRecord({"w": Array(x.astype(np.float32))})
        msgs = strategy.configure_train(rnd, arrays, ConfigRecord(), Nodes(range(len(curv))))
        replies = []
        for m in sorted(msgs, key=lambda m: m.metadata.dst_node_id):
            i = int(m.metadata.dst_node_id)
            corr = m.content[CORRECTION_KEY]["w"].numpy() if CORRECTION_KEY in m.content else 0
            y = x.copy()
            for _ in range(steps[i]):
                y -= lr * (curv[i] * (y - opt[i]) + corr)
            replies.append(reply(m, y.tolist(), steps=steps[i], n=1))
        x = strategy.aggregate_train(rnd, replies)[0]["w"].numpy().astype(np.float64)
    return x


@pytest.mark.parametrize("sampled", [4, 2])
def test_reaches_the_exact_optimum_where_fedavg_drifts(
    sampled: int, flower_run_context: Any
) -> None:
    """Heterogeneous quadratics and local steps: client drift biases FedAvg; SCAFFOLD's
    control variates remove it, with full and with partial participation."""
    from flwr.serverapp.strategy import FedAvg

    curv = np.array([1.0, 2.0, 0.5, 3.0])
    opt = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 1.0], [2.0, -1.0]])
    steps = [1, 5, 10, 20]
    best = (curv[:, None] * opt).sum(0) / curv.sum()  # argmin of the mean objective
    sampling = {"fraction_train": sampled / 4, "min_train_nodes": sampled}
    x = run_quadratics(make(**sampling), curv, opt, steps)
    np.testing.assert_allclose(x, best, atol=1e-4)
    drift = run_quadratics(FedAvg(**sampling, min_available_nodes=2), curv, opt, steps)
    assert np.linalg.norm(drift - best) > 0.3
