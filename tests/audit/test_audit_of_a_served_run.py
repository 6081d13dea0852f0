"""A run's directory holds what its audit needs: the server writes clients.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsim.audit import audit_run
from fedsim.clients.worker import shard_sizes
from tests.conftest import small_scenario
from tests.test_server_loop import serve


def test_the_server_writes_the_shard_sizes_the_audit_checks_against(
    tmp_path: Path, flower_run_context: Any
) -> None:
    sc = small_scenario(rounds=2)
    serve(tmp_path, rounds=2)
    run = tmp_path / "run"
    doc = json.loads((run / "clients.json").read_text(encoding="utf-8"))
    assert doc == {
        "population": sc.population,
        "train_shard_sizes": [int(n) for n in shard_sizes(sc)],
    }
    report = audit_run(run, accountants=["rdp"])
    assert report.violations == []
    assert "shards-unknown" not in {f.kind for f in report.findings}
