"""The audit audits itself: DP off must show leakage, strong noise must stay below the claim.

Small real trainings through the server loop (in-process cohorts, no Ray), with
canaries inserted into clients' shards and scored by the final model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsim.cli.commands import main
from fedsim.empirical.verdict import empirical_verdict
from tests.test_server_loop import serve

# Two clients, many local epochs, a bigger CNN: memorisation is easy when DP is off.
SETUP = dict(
    rounds=4, population=2, sampling__clients_per_round=2, audit__canaries=500,
    train__epochs=10, model__channels=[16, 32], model__hidden=64,
)  # fmt: skip


def test_without_dp_the_audit_detects_leakage(tmp_path: Path, flower_run_context: Any) -> None:
    state = serve(tmp_path, dp__mode="off", **SETUP)
    verdict = empirical_verdict(state.rundir.path)
    assert verdict["claimed_epsilon"] is None
    # hundreds of canaries told apart: a large lower bound at 95 % confidence
    assert verdict["epsilon_lower_bound"] > 2.0
    assert verdict["correct"] / verdict["guesses"] > 0.9
    assert main(["audit", str(state.rundir.path), "--empirical"]) == 0  # nothing claimed


def test_with_strong_noise_the_bound_stays_below_the_claim(
    tmp_path: Path, flower_run_context: Any, capsys: Any
) -> None:
    state = serve(tmp_path, dp__noise_multiplier=3.0, **{**SETUP, "train__epochs": 3})
    verdict = empirical_verdict(state.rundir.path)
    assert verdict["claimed_epsilon"] > 0
    assert verdict["epsilon_lower_bound"] < verdict["claimed_epsilon"]
    assert not verdict["violation"]
    assert main(["audit", str(state.rundir.path), "--empirical", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["canaries"] == 500 and doc["violation"] is False
    # The bound is computed at the claim's delta, not at delta = 0 (Steinke et al. 2023,
    # approximate DP): the audit file and the verdict name the same delta as the claim.
    audit = json.loads((state.rundir.path / "empirical_audit.json").read_text())
    assert audit["delta"] == audit["claimed_delta"] == state.scenario.dp.delta
    assert doc["delta"] == state.scenario.dp.delta
    assert doc["epsilon_lower_bound"] == audit["epsilon_lower_bound"]


def test_missing_audit_file_is_exit_2(tmp_path: Path) -> None:
    assert main(["audit", str(tmp_path), "--empirical"]) == 2
