"""FedDyn (Acar et al. 2021): server state h, new x and every client's g_i by hand."""

from __future__ import annotations

from typing import Any

import pytest

from fedsim.clients.objectives import FEDDYN_ALPHA, FEDDYN_STATE
from fedsim.strategies.feddyn import FedDyn
from tests.strategies.test_scaffold import close, configure, failed, reply


def make(**kw: Any) -> FedDyn:
    args = {"fraction_train": 1.0, "min_train_nodes": 2, "min_available_nodes": 2}
    return FedDyn(**{**args, "population": 4, "alpha": 0.5, **kw})


def test_two_rounds_by_hand(flower_run_context: Any) -> None:
    s = make()
    msgs = configure(s, 1, [1.0, 2.0], [1, 3])
    assert all(m.content["config"][FEDDYN_ALPHA] == 0.5 for m in msgs.values())
    assert all(FEDDYN_STATE not in m.content for m in msgs.values())  # g_i = 0 at first
    arrays, _ = s.aggregate_train(
        1, [reply(msgs[1], [0.8, 2.2], steps=2), reply(msgs[3], [1.2, 1.6], steps=4)]
    )
    # w_i - x: (-0.2, 0.2), (0.2, -0.4); h = 0 - 0.5/4 * (0, -0.2) = (0, 0.025)
    # x = mean(w_i) - h / alpha = (1.0, 1.9) - (0, 0.05) = (1.0, 1.85)
    close(arrays["w"].numpy(), [1.0, 1.85])
    close(s.h_server["w"], [0.0, 0.025])
    # g_i = 0 - alpha (w_i - x)
    close(s.grad_clients[1]["w"], [0.1, -0.1])
    close(s.grad_clients[3]["w"], [-0.1, 0.2])

    msgs = configure(s, 2, [1.0, 1.85], [1, 2])
    close(msgs[1].content[FEDDYN_STATE]["w"].numpy(), [0.1, -0.1])
    assert FEDDYN_STATE not in msgs[2].content
    arrays, _ = s.aggregate_train(2, [reply(msgs[1], [1.1, 1.85], 2), failed(msgs[2])])
    # only client 1: h = (0, 0.025) - 0.125 * (0.1, 0) = (-0.0125, 0.025)
    close(s.h_server["w"], [-0.0125, 0.025])
    close(arrays["w"].numpy(), [1.1 + 0.025, 1.85 - 0.05])
    close(s.grad_clients[1]["w"], [0.1 - 0.05, -0.1])
    assert 2 not in s.grad_clients  # a failed client changes nothing


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"population": 0}])
def test_bad_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        make(**bad)
