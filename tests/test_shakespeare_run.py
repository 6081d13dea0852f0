"""Shakespeare next-character prediction trains under DP-SGD through the server loop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedsim.rundir import read_jsonl
from tests.test_server_loop import serve


def test_two_dp_rounds_beat_uniform_chance(tmp_path: Path, flower_run_context: Any) -> None:
    state = serve(
        tmp_path, rounds=2, population=4, sampling__clients_per_round=4,
        data={"name": "shakespeare", "partition": "natural",
              "shakespeare": {"max_samples_per_role": 200, "max_roles": 40}},
        model={"name": "char_lstm", "hidden": 32, "layers": 1},
        train__batch_size=16, train__lr=1.0, train__max_steps=8,
        evaluation__max_test_samples=400,
    )  # fmt: skip
    metrics = state.metrics
    assert [m["round"] for m in metrics] == [1, 2]
    assert metrics[-1]["accuracy"] > 1 / 80  # above uniform chance over LEAF's 80 characters
    assert metrics[-1]["loss"] < math.log(80)
    ledger = read_jsonl(state.rundir.ledger)
    assert len(ledger) == 8 and all(math.isfinite(x["epsilon"]) for x in ledger)
