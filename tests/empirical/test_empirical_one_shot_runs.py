"""User-level one-shot estimate inside DP-FedAvg runs: it tracks the noise level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsim.cli.commands import main
from fedsim.empirical.verdict import empirical_verdict
from tests.test_server_loop import serve

SETUP = dict(
    rounds=5, population=20, sampling__clients_per_round=5, dp__mode="user", dp__delta=1e-3,
    audit__canary_clients=300, model__channels=[2], model__hidden=0,
)  # fmt: skip


def estimate(tmp_path: Path, z: float) -> dict[str, Any]:
    state = serve(tmp_path / str(z), dp__noise_multiplier=z, **SETUP)
    return json.loads((state.rundir.path / "empirical_audit.json").read_text())


def test_one_shot_estimate_falls_with_noise(tmp_path: Path, flower_run_context: Any) -> None:
    weak, strong = estimate(tmp_path, 0.3), estimate(tmp_path, 3.0)
    assert weak["method"] == "one_shot" and weak["canaries"] == 300
    # inserted canaries align with the final delta, held-out ones do not
    assert weak["inserted_cosine_mean"] > 5 * abs(weak["heldout_cosine_mean"])
    assert weak["epsilon_estimate"] > 2.0
    assert strong["epsilon_estimate"] < weak["epsilon_estimate"] / 3
    assert strong["claimed_epsilon"] < weak["claimed_epsilon"]
    # an estimate is reported, never turned into a violation
    assert main(["audit", str(tmp_path / "3.0" / "run"), "--empirical"]) == 0


def test_user_level_verdict_claims_the_user_level_epsilon(
    tmp_path: Path, flower_run_context: Any, capsys: Any
) -> None:
    state = serve(tmp_path, dp__noise_multiplier=1.0, **SETUP)
    claimed = state.summary(0.0)["epsilon"]["max"]
    assert claimed > 0
    verdict = empirical_verdict(state.rundir.path)
    assert verdict["claimed_epsilon"] == claimed
    assert verdict["level"] == "user" and verdict["kind"] == "estimate"
    assert "epsilon_lower_bound" not in verdict  # an estimate is not filed as a bound
    audit = json.loads((state.rundir.path / "empirical_audit.json").read_text())
    assert verdict["epsilon_estimate"] == audit["epsilon_estimate"]
    assert verdict["exceeds_claim"] is (audit["epsilon_estimate"] > claimed)
    assert verdict["delta"] == 1e-3
    assert main(["audit", str(state.rundir.path), "--empirical"]) == 0
    out = capsys.readouterr().out
    assert "user level" in out and "example level" not in out
