"""The report's numbers, its JSON document and its terminal rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fedsim.audit import EXIT_CLEAN, SCHEMA, audit_command, audit_run, render_audit
from fedsim.audit.crosscheck import HETEROGENEOUS
from fedsim.audit.inputs import default_accountants, load_run
from fedsim.privacy import PrivacyLedger, epsilon_of_history
from tests.audit.rundirs import write_run, write_user_run
from tests.conftest import small_scenario

TOP_KEYS = {
    "schema",
    "run_dir",
    "exit_code",
    "scenario",
    "ledger",
    "sample_level",
    "user_level",
    "guarantees",
    "accountants",
    "assumptions",
    "violations",
    "warnings",
    "non_finite",
}
SAMPLE_KEYS = {
    "accountant",
    "delta",
    "population",
    "clients_seen",
    "epsilon",
    "participations",
    "worst_client",
    "median_client",
    "histogram",
    "clients",
}
ASSUMPTION_KEYS = {
    "example_sampling",
    "client_sampling",
    "neighbouring_relation",
    "noise_rng",
    "sampling_rng",
    "trust_model",
    "accountant",
    "composition",
}


def _strict(text: str) -> dict:
    def refuse(name: str) -> float:
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_epsilons_are_recomputed_over_the_whole_population(clean_run: Path) -> None:
    report = audit_run(clean_run, accountants=["rdp"])
    s = report.sample
    assert s is not None
    ledger = PrivacyLedger.load(clean_run / "privacy_ledger.jsonl")
    assert {c.client: c.epsilon for c in s.clients} == pytest.approx(ledger.epsilons(), rel=1e-12)
    # Client 5 was never sampled: it counts, with epsilon 0.
    assert [c.client for c in s.clients] == [0, 1, 2, 3, 4]
    assert s.population == 6 and s.epsilon.min == 0.0
    assert s.epsilon.max == pytest.approx(ledger.summary(6)["max"], rel=1e-12)
    assert s.epsilon.median == pytest.approx(ledger.summary(6)["median"], rel=1e-12)
    assert s.participations.max == 2 and s.total_participations == 8
    # Clients 1..3 took part twice (30 steps), 0 and 4 once; client 3's shard (239) is
    # one example smaller, so its sampling rate and epsilon are the largest.
    twice = epsilon_of_history([(1.0, 16 / 239, 30)], delta=1e-5)
    assert s.worst.epsilon == pytest.approx(twice, rel=1e-12) and s.worst.client == 3
    assert report.guarantees()[0]["epsilon"] == s.epsilon.max


def test_histogram_counts_sum_to_population(clean_run: Path) -> None:
    report = audit_run(clean_run, accountants=["rdp"])
    hist = report.sample.histogram  # type: ignore[union-attr]
    assert hist.total == 6 == sum(hist.counts) + hist.infinite
    assert len(hist.counts) == 10 and len(hist.edges) == 11
    assert hist.edges[0] == 0.0  # the never-sampled client
    assert hist.counts[0] == 1 and hist.counts[-1] == 3  # client 5 / clients 1..3


def test_json_document_has_stable_keys_and_is_strict(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = audit_command(str(clean_run), as_json=True, accountants="rdp,prv")
    doc = _strict(capsys.readouterr().out)
    assert code == EXIT_CLEAN == doc["exit_code"]
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == SCHEMA
    assert set(doc["sample_level"]) == SAMPLE_KEYS
    assert set(doc["assumptions"]) == ASSUMPTION_KEYS
    assert doc["user_level"] is None and doc["non_finite"] == {}
    assert doc["ledger"] == {"lines": 8, "sample_lines": 8, "user_lines": 0, "failed_lines": 0}
    assert sum(doc["sample_level"]["histogram"]["counts"]) == 6
    acc = doc["accountants"]
    assert acc["requested"] == ["rdp", "prv"]
    worst, median = doc["sample_level"]["worst_client"], doc["sample_level"]["median_client"]
    assert [r["subject"] for r in acc["rows"]] == [
        f"worst client ({worst['client']})",
        f"median client ({median['client']})",
    ]
    for row in acc["rows"]:
        assert set(row["epsilon"]) == {"rdp", "prv"}
        lo, hi = sorted(row["epsilon"].values())
        assert row["max_relative_disagreement"] == pytest.approx((hi - lo) / lo)
        # RDP above PRV is expected looseness: reported beside the tightest, not flagged
        assert row["tightest"] == "prv" and row["tightest_epsilon"] == lo
        assert row["looseness"]["rdp"] == pytest.approx((hi - lo) / lo)
        assert row["flagged"] is False and row["problems"] == []
    assert acc["tight_agreement"] == 0.02
    g = doc["guarantees"][0]
    assert g["level"] == "sample" and "max over clients" in g["rule"]
    assert g["epsilon"] == doc["sample_level"]["epsilon"]["max"]


def test_infinite_epsilon_is_null_with_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run", small_scenario(dp__noise_multiplier=0.0))
    code = audit_command(str(run), as_json=True, accountants="rdp,prv")
    doc = _strict(capsys.readouterr().out)
    assert code == EXIT_CLEAN  # no noise is no guarantee, but the ledger says so honestly
    assert doc["sample_level"]["epsilon"]["max"] is None
    assert doc["non_finite"]["/sample_level/epsilon/max"] == "inf"
    assert doc["non_finite"]["/guarantees/0/epsilon"] == "inf"
    assert doc["sample_level"]["histogram"]["infinite"] == 5
    console = Console(record=True, width=120)
    render_audit(audit_run(run, accountants=["rdp"]), console)
    assert "inf (no noise)" in console.export_text()


def test_terminal_output_has_every_section(clean_run: Path) -> None:
    console = Console(record=True, width=120)
    render_audit(audit_run(clean_run, accountants=["rdp", "prv", "gdp"]), console)
    text = console.export_text()
    for needle in (
        "Per-client epsilon, sample level",
        "Histogram of per-client epsilon",
        "Population guarantee",
        "max over clients",
        "Accountants side by side",
        "Assumptions",
        "add/remove one training example",
        "seeded (summary.json)",
        "q_c = batch_size / shard_size_c",
        "audit: no violations (exit 0)",
    ):
        assert needle in text, needle


def test_gdp_on_a_heterogeneous_history_is_not_applicable(tmp_path: Path) -> None:
    def hook(rnd, client, e):  # type: ignore[no-untyped-def]
        # Client 1 (the worst) trains round 2 on a different noise: still consistent
        # with its ledger, but gdp cannot compose it.
        return e.__class__(**{**e.__dict__, "noise_multiplier": 1.5}) if rnd == 2 else e

    run = write_run(tmp_path / "run", small_scenario(), event_hook=hook)
    report = audit_run(run, accountants=["rdp", "gdp"])
    worst = report.rows[0]
    assert worst.notes["gdp"] == HETEROGENEOUS and worst.epsilon["gdp"] is None
    assert worst.between is None  # one number left: nothing to disagree with
    console = Console(record=True, width=120)
    render_audit(report, console)
    assert HETEROGENEOUS in console.export_text()


def test_default_accountants() -> None:
    sc = small_scenario(dp__accountant="gdp")
    names = default_accountants(sc)
    assert names[:3] == ["gdp", "rdp", "prv"]
    # PLD is the slowest: it runs when named (--accountants rdp,prv,pld)
    assert "pld" not in names


def test_dp_off_run_without_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.toml").write_text(small_scenario(dp__mode="off").to_toml())
    report = audit_run(run, accountants=["rdp"])
    assert report.sample is None and report.user is None and report.violations == []
    assert report.assumptions["noise_rng"].startswith("no noise")
    assert audit_command(str(run), as_json=False, accountants="rdp") == EXIT_CLEAN
    assert "No DP release" in capsys.readouterr().out
    assert load_run(run).ledger_present is False


@pytest.mark.parametrize("secure", [False, True])
def test_assumptions_state_sampling_and_noise_separately(tmp_path: Path, secure: bool) -> None:
    sc = small_scenario(dp__mode="user", dp__secure_rng=secure)
    run = write_user_run(tmp_path / "run", sc, [[0, 1, 2, 5], [1, 2, 3, 4]])
    text = audit_run(run, accountants=["rdp"]).assumptions
    if secure:
        assert text["sampling_rng"].startswith("sampling: secret (OS entropy")
        assert text["noise_rng"].startswith("noise: secret (OS entropy")
    else:
        assert text["sampling_rng"].startswith("sampling: seeded (reproducible, no secrecy")
        assert text["noise_rng"].startswith("noise: seeded")
    assert "Poisson client cohorts" in text["sampling_rng"]
    # the trust boundary: the run directory, with its unnoised records, is the curator's
    assert "curator" in text["trust_model"] and "train losses" in text["trust_model"]


def test_summary_without_sampling_rng_was_seeded_sampling(tmp_path: Path) -> None:
    # A secure_rng run written before the sampling was drawn from OS entropy.
    sc = small_scenario(dp__mode="user", dp__secure_rng=True)
    run = write_user_run(tmp_path / "run", sc, [[0, 1, 2, 5], [1, 2, 3, 4]])
    doc = json.loads((run / "summary.json").read_text())
    del doc["sampling_rng"]
    (run / "summary.json").write_text(json.dumps(doc))
    text = audit_run(run, accountants=["rdp"]).assumptions
    assert text["sampling_rng"].startswith("sampling: seeded (reproducible, no secrecy")
