"""Safety: replies carry model-shaped arrays and scalars only, never raw client data."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from fedsim.cli.progress import RunProgress
from fedsim.clients.trainer import build_global_model
from fedsim.engine.simulation import ServerRun, _server_loop
from fedsim.launch import client_side
from fedsim.rundir import RunDir
from tests.conftest import small_scenario
from tests.test_grid import InProcessGrid


class RecordingGrid(InProcessGrid):
    def __init__(self, nodes: int) -> None:
        super().__init__(nodes)
        self.replies: list[Message] = []

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        got = super().pull_messages(ids)
        self.replies.extend(got)
        return got


def test_every_reply_holds_only_model_arrays_and_scalars(
    tmp_path: Path, flower_run_context: Any
) -> None:
    sc = small_scenario(rounds=2, evaluation__federated_fraction=0.5, faults__fail_probability=0.3)
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    state = ServerRun(sc, rundir, RunProgress(sc, enabled=False), clients=client_side())
    grid = RecordingGrid(nodes=8)
    try:
        _server_loop(grid, sc, state)
    finally:
        state.close()
    shapes = {
        k: tuple(v.shape) for k, v in build_global_model(sc, (1, 8, 8), 10).state_dict().items()
    }
    assert grid.replies
    for reply in grid.replies:
        for key, record in reply.content.items():
            if isinstance(record, ArrayRecord):
                got = {k: tuple(a.shape) for k, a in record.items()}
                assert got == shapes, key  # exactly the model's tensors
            elif isinstance(record, MetricRecord | ConfigRecord):
                for name, value in record.items():
                    scalars = (int, float, str, bool)
                    ok = isinstance(value, scalars) or (
                        isinstance(value, list) and all(isinstance(v, int) for v in value)
                    )
                    assert ok, (key, name, type(value))
                    assert not isinstance(value, bytes)
            else:
                raise AssertionError(f"unexpected record {key}: {type(record).__name__}")
