"""VirtualClientGrid round trip without Ray: the real cohort handler runs in-process.

The inner grid below stands in for Flower's engine (the thin seam DESIGN.md asks
for): it hands each cohort message to the real ClientApp handler and returns its
reply. Everything else is the code a real run uses.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAvg

from fedsim.clients.app import handle_cohort
from fedsim.clients.trainer import build_global_model
from fedsim.engine.grid import VirtualClientGrid, cohort_size
from fedsim.strategies import build_strategy
from tests.conftest import small_scenario


class InProcessGrid:
    """Minimal inner grid: n supernodes, each message handled synchronously."""

    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(100, 100 + nodes))
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg_id = f"m{len(self.sent)}-{i}"
            msg.metadata.__dict__["_message_id"] = msg_id
            self.sent.append(msg)
            self._replies[msg_id] = handle_cohort(msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(ids) if i in self._replies]


def one_round(
    k: Any, flower_run_context: Any, **overrides: Any
) -> tuple[dict, list, InProcessGrid]:
    # The grid's own invariance to K, on the sequential engine; the vectorised engine
    # keeps it through cohorts in multiples of its chunk (tests/clients/test_vectorised.py).
    overrides.setdefault("backend__engine", "sequential")
    sc = small_scenario(backend__clients_per_message=k, **overrides)
    inner = InProcessGrid(nodes=8)
    grid = VirtualClientGrid(
        inner,
        population=sc.population,
        workers=2,
        clients_per_message=k,
        scenario_json=sc.fingerprint(),
    )
    grid.current_round = 1
    strategy = build_strategy(sc)
    model = build_global_model(sc, (1, 8, 8), 10)
    random.seed(7)
    msgs = strategy.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), grid)
    replies, report = grid.exchange(msgs)
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays.to_torch_state_dict(), report.outcomes, inner


def test_k1_and_auto_give_identical_aggregate(flower_run_context: Any) -> None:
    agg1, out1, inner1 = one_round(1, flower_run_context)
    agg_auto, out_auto, inner_auto = one_round("auto", flower_run_context)
    assert len(inner1.sent) == 4  # one message per client
    assert len(inner_auto.sent) == 2  # one message per worker
    assert [o.client for o in out1] == [o.client for o in out_auto]
    for key in agg1:
        assert np.array_equal(agg1[key].numpy(), agg_auto[key].numpy()), key
    # the events the ledger will see are the same too
    assert [o.privacy for o in out1] == [o.privacy for o in out_auto]


def test_shared_global_model_is_sent_once_per_cohort(flower_run_context: Any) -> None:
    _, _, inner = one_round("auto", flower_run_context)
    for msg in inner.sent:
        arrays = [k for k, v in msg.content.items() if isinstance(v, ArrayRecord)]
        assert arrays == ["r0"]  # one copy of the global model per cohort message


def test_replies_are_per_client_and_answer_the_original(flower_run_context: Any) -> None:
    sc = small_scenario()
    grid = VirtualClientGrid(
        InProcessGrid(4),
        population=6,
        workers=2,
        clients_per_message="auto",
        scenario_json=sc.fingerprint(),
    )
    grid.current_round = 1
    model = build_global_model(sc, (1, 8, 8), 10)
    strategy = FedAvg(fraction_train=1.0, min_train_nodes=6, min_available_nodes=6)
    random.seed(0)
    msgs = list(strategy.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), grid))
    replies = grid.send_and_receive(msgs)
    assert sorted(m.metadata.dst_node_id for m in msgs) == list(range(6))
    by_id = {m.metadata.message_id: m for m in msgs}
    for reply in replies:
        original = by_id[reply.metadata.reply_to_message_id]
        assert reply.metadata.src_node_id == original.metadata.dst_node_id
        assert set(reply.content.keys()) == {"arrays", "metrics"}
        assert reply.content["metrics"]["num-examples"] > 0


def test_failed_client_becomes_error_reply_and_round_goes_on(flower_run_context: Any) -> None:
    _, outcomes, _ = one_round("auto", flower_run_context, faults__fail_probability=0.5)
    failed = [o for o in outcomes if o.error]
    trained = [o for o in outcomes if not o.error]
    assert failed and trained, "seeded faults should fail some of 4 clients, not all"
    for o in failed:
        assert "injected failure" in o.error
        # it trained half its steps before failing, and says so
        assert o.privacy is not None and o.privacy.steps == o.steps_before_error > 0


@pytest.mark.parametrize(
    ("n", "workers", "setting", "k"),
    [(10, 2, "auto", 5), (11, 2, "auto", 6), (3, 8, "auto", 1), (10, 2, 3, 3)],
)
def test_cohort_size(n: int, workers: int, setting: Any, k: int) -> None:
    assert cohort_size(n, workers, setting) == k


def test_per_client_records_travel_per_client_shared_ones_once(flower_run_context: Any) -> None:
    from flwr.app import Array, RecordDict

    from fedsim.protocol import pack_request, unpack_request

    shared = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    config = ConfigRecord({"server-round": 1})
    own = [ArrayRecord({"w": Array(np.full(3, i, dtype=np.float32))}) for i in range(3)]
    contents = [
        RecordDict({"arrays": shared, "config": config, "correction": own[i]}) for i in range(3)
    ]
    rd = pack_request(
        round=1, kind="train", scenario_json="{}", clients=[4, 5, 6], contents=contents
    )
    assert len([k for k in rd if k.startswith("r")]) == 2 + 3  # shared twice-used once, own x3
    req = unpack_request(rd)
    for pos in range(3):
        got = req.content_for(pos)
        assert got["correction"]["w"].numpy().tolist() == [pos] * 3
        assert req.record_index(pos, "arrays") == req.record_index(0, "arrays")


# ---------------------------------------------------------------- worker failures

RAY_UNAVAILABLE = (
    "<class 'ray.exceptions.ActorUnavailableError'>:<'The actor 1f is unavailable: "
    "restarting. The task may or may not have been executed on the actor.'>"
)


def test_worker_errors_are_recognised_by_class_not_by_text(flower_run_context: Any) -> None:
    import ray.exceptions
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    from fedsim.engine.grid import worker_error, worker_restarting

    died = "<class 'ray.exceptions.ActorDiedError'>:<'The actor died unexpectedly'>"
    assert worker_error(Error(ErrorCode.UNKNOWN, RAY_UNAVAILABLE)) is (
        ray.exceptions.ActorUnavailableError
    )
    assert worker_restarting(Error(ErrorCode.UNKNOWN, RAY_UNAVAILABLE))
    assert worker_error(Error(ErrorCode.UNKNOWN, died)) is ray.exceptions.ActorDiedError
    assert not worker_restarting(Error(ErrorCode.UNKNOWN, died))  # dead: not re-sent
    # The class name in a client's own error text, or another module's class of that
    # name, is not a Ray worker failure.
    for code, reason in [
        (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, RAY_UNAVAILABLE),
        (ErrorCode.UNKNOWN, "injected failure after ActorUnavailableError"),
        (ErrorCode.UNKNOWN, "<class 'mylib.ActorUnavailableError'>:<'x'>"),
        (ErrorCode.UNKNOWN, "<class 'ray.exceptions.RaySystemError'>:<'x'>"),
    ]:
        assert worker_error(Error(code, reason)) is None, reason


class FlakyWorkerGrid(InProcessGrid):
    """The first `fail` cohorts sent get Ray's "worker restarting" error reply.

    Every reply claims to come from one Ray actor; its process id changes when
    `restart_after` replies have been sent, as when Ray restarts a dead actor.
    """

    def __init__(self, nodes: int, *, fail: int = 0, restart_after: int | None = None) -> None:
        super().__init__(nodes)
        self.fail = fail
        self.restart_after = restart_after
        self.answered = 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        from flwr.app import Error
        from flwr.common.constant import ErrorCode

        from fedsim.protocol import COHORT_KEY

        ids = super().push_messages(messages)
        for msg_id in ids:
            if self.fail > 0:
                self.fail -= 1
                original = self.sent[-len(ids) + ids.index(msg_id)]
                self._replies[msg_id] = Message(
                    Error(ErrorCode.UNKNOWN, RAY_UNAVAILABLE), reply_to=original
                )
                continue
            meta = self._replies[msg_id].content[COHORT_KEY]
            restarted = self.restart_after is not None and self.answered >= self.restart_after
            meta["actor"], meta["worker"] = "actor-1", 2000 if restarted else 1000
            self.answered += 1
        return ids


def _grid_round(
    inner: InProcessGrid, sc: Any, rnd: int = 1
) -> tuple[list[Message], Any, VirtualClientGrid]:
    grid = VirtualClientGrid(
        inner,
        population=sc.population,
        workers=2,
        clients_per_message="auto",
        scenario_json=sc.fingerprint(),
    )
    grid.current_round = rnd
    strategy = build_strategy(sc)
    model = build_global_model(sc, (1, 8, 8), 10)
    random.seed(7)
    msgs = strategy.configure_train(rnd, ArrayRecord(model.state_dict()), ConfigRecord(), grid)
    replies, report = grid.exchange(msgs)
    return replies, report, grid


def test_resent_cohort_is_counted_and_its_lost_attempt_charged(
    flower_run_context: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    import fedsim.engine.grid as grid_module
    from fedsim.engine.loop import client_counts
    from fedsim.privacy.accounting import PrivacyAccounting
    from fedsim.rundir import RunDir, read_jsonl

    monkeypatch.setattr(grid_module, "RETRY_WAIT", 0.0)
    sc = small_scenario()
    replies, report, _ = _grid_round(FlakyWorkerGrid(8, fail=1), sc)
    # The strategy sees every client trained once: the re-send answered.
    assert len(replies) == 4 and not any(r.has_error() for r in replies)
    lost = [o for o in report.outcomes if o.extra.get("resent")]
    assert report.cohorts_resent == 1 and len(lost) == 2  # one cohort of K=2 clients
    assert all("ActorUnavailableError" in o.error and "sent again" in o.error for o in lost)
    counts = client_counts(report)
    assert counts["cohorts_resent"] == 1 and counts["worker_restarts"] == 0
    assert counts["clients_trained"] == 4 and counts["clients_failed"] == 0
    # The lost attempt may have run: the ledger charges its planned participation,
    # on top of the re-send's real one.
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    accounting = PrivacyAccounting.open(sc, rundir.ledger)
    accounting.set_shard_sizes(np.full(sc.population, 200))
    accounting.record(report)
    accounting.close()
    lines = read_jsonl(rundir.ledger)
    for o in lost:
        mine = [x for x in lines if x["client"] == o.client]
        assert [x["status"] for x in mine] == ["failed", "trained"]
        assert "upper bound" in mine[0]["error"]
    assert len(lines) == 4 + 2


def test_a_worker_in_a_new_process_counts_as_restarted(flower_run_context: Any) -> None:
    sc = small_scenario()
    inner = FlakyWorkerGrid(8, restart_after=1)  # 2 cohorts: the second, from a new pid
    _, report, grid = _grid_round(inner, sc)
    assert report.worker_restarts == 1
    assert _grid_round(FlakyWorkerGrid(8), sc)[1].worker_restarts == 0  # same pid throughout
