"""A Ray worker process dies mid-round; a client returns NaN: the run goes on, honestly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fedsim.rundir import read_jsonl
from fedsim.simulation import run
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration


def test_worker_crash_and_nan_update(tmp_path: Path) -> None:
    sc = small_scenario(
        rounds=4,
        population=4,
        sampling__clients_per_round=4,
        faults__crash_worker_at=[2, 0],
        faults__nan_probability=0.2,
    )
    result = run(sc, tmp_path / "run", progress=False)
    metrics = result.metrics
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]  # the run went on
    crashed = [f for f in metrics[1]["failures"] if "cohort failed" in f["error"]]
    assert {f["client"] for f in crashed} == {0, 1}  # client 0's cohort (K=2) was lost
    # later rounds run on the restarted worker, and the metrics say it was restarted
    assert all("cohort failed" not in f["error"] for m in metrics[2:] for f in m["failures"])
    assert sum(m["worker_restarts"] for m in metrics) == 1
    assert [m["worker_restarts"] for m in metrics[:2]] == [0, 0]  # seen when it answers
    # The dead worker's in-flight cohort is lost, not sent again (ActorDiedError);
    # any re-sent attempt would be counted and charged as well.
    assert sum(m["cohorts_resent"] for m in metrics) == 0
    ledger = read_jsonl(tmp_path / "run" / "privacy_ledger.jsonl")
    lost = [x for x in ledger if x["round"] == 2 and x["client"] in (0, 1)]
    assert len(lost) == 2 and all(x["status"] == "failed" for x in lost)
    assert all("upper bound" in x["error"] for x in lost)
    assert all("ActorDiedError" in x["error"] for x in lost)  # Ray's own word for it
    nan = [f for m in metrics for f in m["failures"] if "non-finite" in f["error"]]
    assert nan, "seeded NaN injection hits some client"
    for tensor in result.state_dict.values():
        assert torch.isfinite(tensor).all()  # never aggregated
    assert math.isfinite(metrics[-1]["loss"])
