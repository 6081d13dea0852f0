"""Violations: exit code 1, each named by kind and ledger line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedsim.audit import EXIT_CLEAN, EXIT_VIOLATIONS, audit_command, audit_run
from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.inputs import load_run
from fedsim.audit.run_checks import check_budget
from fedsim.audit.sample import sample_level
from fedsim.privacy import PrivacyEvent, epsilon_of_history
from tests.audit.rundirs import read_lines, write_lines, write_run, write_user_run
from tests.conftest import small_scenario


def _kinds(report: object) -> set[str]:
    return {f.kind for f in report.findings if f.severity == "violation"}  # type: ignore[attr-defined]


def test_clean_run_has_no_violations(clean_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = audit_run(clean_run, accountants=["rdp"])
    assert report.violations == []
    assert audit_command(str(clean_run), as_json=False, accountants="rdp") == EXIT_CLEAN
    assert "no violations" in capsys.readouterr().out


def test_tampered_epsilon_is_a_violation_naming_the_line(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = read_lines(clean_run)
    lines[5]["epsilon"] = lines[5]["epsilon"] * 0.5  # someone made a client look safer
    write_lines(clean_run, lines)
    report = audit_run(clean_run, accountants=["rdp"])
    stored = [f for f in report.findings if f.kind == "stored-epsilon"]
    assert [f.line for f in stored] == [6]
    assert audit_command(str(clean_run), as_json=False, accountants="rdp") == EXIT_VIOLATIONS
    assert "stored-epsilon" in capsys.readouterr().out


def test_tiny_float_noise_in_stored_epsilon_is_tolerated(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    lines[0]["epsilon"] *= 1 + 1e-9
    write_lines(clean_run, lines)
    assert audit_run(clean_run, accountants=["rdp"]).violations == []


def test_noise_below_the_scenario_is_a_plan_mismatch(tmp_path: Path) -> None:
    # The ledger is self-consistent (epsilons match its events) but every client used
    # less noise than the scenario asked for: only the plan check can catch it.
    run = write_run(
        tmp_path / "run",
        small_scenario(),
        event_hook=lambda r, c, e: dataclasses.replace(e, noise_multiplier=0.8),
    )
    report = audit_run(run, accountants=["rdp"])
    plan = [f for f in report.findings if f.kind == "plan-mismatch"]
    assert len(plan) == 8  # every line
    assert "noise_multiplier 0.8 != planned 1.0" in plan[0].message
    assert "stored-epsilon" not in _kinds(report)
    assert report.exit_code == EXIT_VIOLATIONS


def test_wrong_sample_rate_and_extra_steps(tmp_path: Path) -> None:
    def hook(rnd: int, client: int, e: PrivacyEvent) -> PrivacyEvent:
        if client == 1:  # accounted with the rate of a bigger shard than it has
            return dataclasses.replace(e, sample_rate=e.sample_rate / 2)
        if client == 2:
            return dataclasses.replace(e, steps=e.steps + 1)
        return e

    report = audit_run(
        write_run(tmp_path / "run", small_scenario(), event_hook=hook), accountants=["rdp"]
    )
    rate = [f for f in report.findings if f.kind == "sample-rate"]
    assert rate and all("client 1" in f.message and "16/240" in f.message for f in rate)
    plan = [f for f in report.findings if f.kind == "plan-mismatch"]
    assert plan and all(
        "client 2" in f.message and "steps 16 > planned 15" in f.message for f in plan
    )


def test_line_marked_mismatch_by_the_run(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    lines[1]["mismatch"] = "steps 99 > planned 15"
    write_lines(clean_run, lines)
    report = audit_run(clean_run, accountants=["rdp"])
    found = [f for f in report.findings if f.kind == "reported-mismatch"]
    assert [f.line for f in found] == [2] and "steps 99" in found[0].message


def test_accountant_or_delta_other_than_the_scenario(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    path = clean_run / "scenario.toml"
    path.write_text(path.read_text().replace("delta = 1e-05", "delta = 1e-06"))
    write_lines(clean_run, lines)
    report = audit_run(clean_run, accountants=["rdp"])
    assert "accounting-mismatch" in _kinds(report)
    assert any("delta 1e-05" in v for v in report.violations)


def test_client_outside_population_is_counted_and_flagged(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    rogue = dict(lines[0], client=42, round=2)
    write_lines(clean_run, [*lines, rogue])
    report = audit_run(clean_run, accountants=["rdp"])
    assert "ledger-scenario" in _kinds(report)
    assert report.sample is not None and report.sample.population == 7
    assert report.sample.histogram.total == 7


def test_summary_json_claims_are_checked(clean_run: Path) -> None:
    path = clean_run / "summary.json"
    doc = json.loads(path.read_text())
    doc["epsilon"]["max"] = doc["epsilon"]["max"] / 2
    doc["noise_rng"] = "os-entropy"  # the scenario has dp.secure_rng = false
    path.write_text(json.dumps(doc))
    report = audit_run(clean_run, accountants=["rdp"])
    assert {"stored-epsilon", "summary"} <= _kinds(report)


def test_missing_summary_is_a_warning_only(clean_run: Path) -> None:
    (clean_run / "summary.json").unlink()
    report = audit_run(clean_run, accountants=["rdp"])
    assert report.violations == []
    assert any("summary-missing" in w for w in report.warnings)
    assert report.noise_rng_source == "scenario dp.secure_rng"


def test_budget_max_epsilon_and_target(clean_run: Path) -> None:
    inputs = load_run(clean_run)
    sample = sample_level(
        inputs.level("sample"), population=6, accountant="rdp", delta=1e-5, cache=EpsilonCache()
    )
    # dp.max_epsilon does not exist in the scenario yet: a stand-in with the field.
    over = SimpleNamespace(dp=SimpleNamespace(max_epsilon=1.0, mode="sample", target_epsilon=None))
    found = check_budget(over, sample, None)  # type: ignore[arg-type]
    assert len(found) == 1 and "5 client(s) exceed dp.max_epsilon = 1" in found[0].message
    room = SimpleNamespace(dp=SimpleNamespace(max_epsilon=1e3, mode="sample", target_epsilon=None))
    assert check_budget(room, sample, None) == []  # type: ignore[arg-type]
    target = SimpleNamespace(dp=SimpleNamespace(mode="sample", target_epsilon=0.5))
    assert "dp.target_epsilon" in check_budget(target, sample, None)[0].message  # type: ignore[arg-type]


def test_target_epsilon_run_is_clean(tmp_path: Path) -> None:
    sc = small_scenario(dp__noise_multiplier=None, dp__target_epsilon=3.0)
    report = audit_run(write_run(tmp_path / "run", sc), accountants=["rdp"])
    assert report.violations == []
    assert report.sample is not None and report.sample.epsilon.max <= 3.0


# --------------------------------------------------------------------------- user level


def _user_scenario(**overrides: object):  # type: ignore[no-untyped-def]
    return small_scenario(dp__mode="user", **overrides)


# 6 clients, q = 4/6 under Poisson sampling: 4 expected per round.
POISSON_COHORTS = [[0, 1, 2, 5], [1, 2, 3, 4]]


def test_user_level_run_is_clean(tmp_path: Path) -> None:
    run = write_user_run(tmp_path / "run", _user_scenario(), POISSON_COHORTS)
    report = audit_run(run, accountants=["rdp", "gdp"])
    assert report.violations == [], report.violations
    assert report.sample is None and report.user is not None
    want = epsilon_of_history([(1.0, 4 / 6, 2)], delta=1e-5, accountant="rdp")
    assert report.user.epsilon == pytest.approx(want, rel=1e-12)
    assert report.user.per_client is not None and report.user.per_client.max == report.user.epsilon
    assert [g["level"] for g in report.guarantees()] == ["user"]
    row = report.rows[-1]
    assert row.level == "user" and row.epsilon["gdp"] is not None  # homogeneous releases


def _adaptive_split(count_sensitivity: float) -> dict[str, float]:
    """Ledger fields of an adaptive-clipping release of joint z = 1 with sigma_b = 2."""
    from fedsim.strategies.dp_fedavg import split_noise

    return {
        "clip_sum_noise_multiplier": split_noise(1.0, 2.0),
        "count_noise_std": 2.0,
        "count_sensitivity": count_sensitivity,
        "noised_unclipped_fraction": 0.4,
    }


def test_adaptive_noise_split_is_recomputed_from_each_line(tmp_path: Path) -> None:
    sc = _user_scenario(dp__adaptive_clipping=True, dp__clip_count_stddev=2.0)
    clean = write_user_run(tmp_path / "ok", sc, POISSON_COHORTS, extra=_adaptive_split(0.5))
    findings = audit_run(clean, accountants=["rdp"]).findings
    assert [f for f in findings if f.kind == "noise-split"] == []
    # The unshifted count (b_i in {0, 1}) has sensitivity 1: the same noise then gives a
    # joint multiplier (z_delta^-2 + sigma_b^-2)^-1/2 ~ 0.918 < the composed 1.0.
    bad = write_user_run(tmp_path / "bad", sc, POISSON_COHORTS, extra=_adaptive_split(1.0))
    found = [f for f in audit_run(bad, accountants=["rdp"]).findings if f.kind == "noise-split"]
    assert [f.line for f in found] == [1, 2]
    assert all(f.severity == "violation" for f in found)
    assert "0.9176" in found[0].message
    # A line that does not say how its noise was split cannot be checked: a warning.
    bare = write_user_run(tmp_path / "bare", sc, POISSON_COHORTS)
    warned = [f for f in audit_run(bare, accountants=["rdp"]).findings if f.kind == "noise-split"]
    assert [f.severity for f in warned] == ["warning", "warning"]
    # A count noise other than the scenario's sigma_b is a plan mismatch.
    other = {**_adaptive_split(0.5), "count_noise_std": 3.0}
    other["clip_sum_noise_multiplier"] = (1.0 - (2 * 3.0) ** -2) ** -0.5
    odd = write_user_run(tmp_path / "odd", sc, POISSON_COHORTS, extra=other)
    plan = [f for f in audit_run(odd, accountants=["rdp"]).findings if f.kind == "plan-mismatch"]
    assert len(plan) == 2 and "count noise std 3.0 != planned 2.0" in plan[0].message


def test_user_level_tampered_epsilon(tmp_path: Path) -> None:
    run = write_user_run(tmp_path / "run", _user_scenario(), POISSON_COHORTS)
    lines = read_lines(run)
    lines[1]["epsilon"] = lines[0]["epsilon"]  # the second release "cost nothing"
    write_lines(run, lines)
    report = audit_run(run, accountants=["rdp"])
    assert [f.line for f in report.findings if f.kind == "stored-epsilon"] == [2]


def test_fixed_sampling_accounted_as_amplified(tmp_path: Path) -> None:
    sc = _user_scenario(dp__client_sampling="fixed")
    run = write_user_run(tmp_path / "run", sc, POISSON_COHORTS)
    lines = read_lines(run)
    for i, line in enumerate(lines, start=1):  # claim amplification that never happened
        line["sample_rate"] = 0.5
        line["epsilon"] = epsilon_of_history([(1.0, 0.5, i)], delta=1e-5)
    write_lines(run, lines)
    report = audit_run(run, accountants=["rdp"])
    found = [f for f in report.findings if f.kind == "client-sampling"]
    assert any("without Poisson sampling" in f.message for f in found)
    assert report.user is not None and report.user.epsilon_without_amplification is not None
    assert report.user.epsilon_without_amplification > report.user.epsilon
    # The stated guarantee is the one that holds: without the claimed amplification.
    user_guarantee = report.guarantees()[-1]
    assert user_guarantee["epsilon"] == report.user.epsilon_without_amplification
    assert "q = 1" in user_guarantee["rule"]


def test_fixed_sampling_per_client_epsilon_and_budget(tmp_path: Path) -> None:
    sc = _user_scenario(dp__client_sampling="fixed")
    cohorts = [[0, 1, 2, 3], [0, 1, 4, 5], [0, 2, 3, 4]]  # client 0 in all three
    run = write_user_run(tmp_path / "run", sc.model_copy(update={"rounds": 3}), cohorts)
    report = audit_run(run, accountants=["rdp"])
    assert report.violations == [], report.violations  # summary.json spread matches too
    u = report.user
    assert u is not None and u.per_client is not None
    assert u.per_client_seen[0] == pytest.approx(epsilon_of_history([(1.0, 1.0, 3)], delta=1e-5))
    assert u.per_client.max == u.per_client_seen[0] == u.epsilon
    # dp.max_epsilon is per client: only client 0 (3 releases) exceeds a 2-release budget.
    budget = epsilon_of_history([(1.0, 1.0, 2)], delta=1e-5) * 1.01
    over = SimpleNamespace(dp=SimpleNamespace(max_epsilon=budget, mode="user", target_epsilon=None))
    found = check_budget(over, None, u)  # type: ignore[arg-type]
    assert len(found) == 1 and "1 client(s) exceed" in found[0].message
    assert "client 0" in found[0].message


def test_user_noise_other_than_the_scenario(tmp_path: Path) -> None:
    run = write_user_run(
        tmp_path / "run", _user_scenario(dp__noise_multiplier=0.7), POISSON_COHORTS
    )
    path = run / "scenario.toml"
    path.write_text(path.read_text().replace("noise_multiplier = 0.7", "noise_multiplier = 1.0"))
    report = audit_run(run, accountants=["rdp"])
    plan = [f for f in report.findings if f.kind == "plan-mismatch"]
    assert len(plan) == 2 and "noise_multiplier 0.7 != planned 1.0" in plan[0].message


def test_clients_list_must_match_the_count(tmp_path: Path) -> None:
    run = write_user_run(tmp_path / "run", _user_scenario(), POISSON_COHORTS)
    lines = read_lines(run)
    lines[0]["clients_sampled"] = 3
    write_lines(run, lines)
    report = audit_run(run, accountants=["rdp"])
    assert any("lists 4 client(s)" in v for v in report.violations)


def test_user_lines_in_a_sample_level_run(clean_run: Path, tmp_path: Path) -> None:
    user_run = write_user_run(tmp_path / "user", _user_scenario(), POISSON_COHORTS)
    write_lines(clean_run, read_lines(clean_run) + read_lines(user_run))
    report = audit_run(clean_run, accountants=["rdp"])
    assert any(
        "user-level line(s) but the scenario has dp.mode = 'sample'" in v for v in report.violations
    )


def test_poisson_sampling_far_from_the_accounted_rate(tmp_path: Path) -> None:
    sc = _user_scenario(population=400, sampling__clients_per_round=40, rounds=20)
    # q = 0.1 of 400 is 40 +- 6 per round; 80 every round is ~ +30 sigma.
    run = write_user_run(tmp_path / "run", sc, [list(range(80))] * 20)
    report = audit_run(run, accountants=["rdp"])
    found = [f for f in report.findings if f.kind == "client-sampling"]
    assert len(found) == 1 and "binomial standard deviations" in found[0].message
    assert report.user is not None and report.user.realised is not None
    assert report.user.realised.observed == pytest.approx(0.2)
    assert report.user.realised.z_score > 4


def test_poisson_sampling_within_the_band(tmp_path: Path) -> None:
    sc = _user_scenario(population=400, sampling__clients_per_round=40, rounds=20)
    rng = np.random.default_rng(0)
    cohorts = [sorted(np.flatnonzero(rng.random(400) < 0.1).tolist()) for _ in range(20)]
    report = audit_run(write_user_run(tmp_path / "run", sc, cohorts), accountants=["rdp"])
    assert report.violations == [], report.violations


def test_scenario_accountant_that_cannot_compose_falls_back_to_rdp(tmp_path: Path) -> None:
    # Client 1 changes noise in round 2: a history gdp refuses. fedsim's ledger would
    # never record that with gdp, so it is a violation, and the figures use rdp.
    def hook(rnd: int, client: int, e: PrivacyEvent) -> PrivacyEvent:
        return dataclasses.replace(e, noise_multiplier=1.5) if rnd == 2 and client == 1 else e

    run = write_run(tmp_path / "run", small_scenario(), event_hook=hook)
    path = run / "scenario.toml"
    path.write_text(path.read_text().replace('accountant = "rdp"', 'accountant = "gdp"'))
    report = audit_run(run, accountants=["rdp"])
    assert report.sample is not None and report.sample.accountant == "rdp"
    assert any("cannot compose" in v and "'gdp'" in v for v in report.violations)
    assert report.exit_code == EXIT_VIOLATIONS
