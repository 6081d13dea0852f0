"""The shipped quickstart, as a user runs it: DP off reaches 0.85; DP on, every epsilon finite."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedsim.cli import main
from fedsim.rundir import read_jsonl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dp", ["off", "sample"])
def test_quickstart(dp: str, tmp_path: Path) -> None:
    out = tmp_path / dp
    code = main(
        [
            "run",
            str(ROOT / "scenarios/quickstart.toml"),
            "--set",
            f"dp.mode={dp}",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == 10
    if dp == "off":
        assert metrics[-1]["accuracy"] >= 0.85
        assert not (out / "privacy_ledger.jsonl").exists() or not read_jsonl(
            out / "privacy_ledger.jsonl"
        )
    else:
        ledger = read_jsonl(out / "privacy_ledger.jsonl")
        assert ledger and all(math.isfinite(x["epsilon"]) and x["epsilon"] > 0 for x in ledger)
        summary = read_jsonl(out / "metrics.jsonl")[-1]
        assert math.isfinite(summary["epsilon_max"])
