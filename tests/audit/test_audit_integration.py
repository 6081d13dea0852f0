"""The audit of a real run: Flower + Ray train DP-SGD clients, the audit finds it clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fedsim
from fedsim.audit import EXIT_CLEAN, EXIT_VIOLATIONS, audit_command, audit_run
from fedsim.privacy import PrivacyLedger
from tests.audit.rundirs import read_lines, write_lines
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Injected failures: failed clients still spent privacy and must be audited too.
    sc = small_scenario(faults__fail_probability=0.3)
    result = fedsim.run(sc, tmp_path_factory.mktemp("audit-real") / "run", progress=False)
    return Path(result.run_dir)


def test_real_run_audits_clean(real_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = audit_run(real_run, accountants=["rdp", "prv"])
    assert report.violations == [], report.violations
    ledger = PrivacyLedger.load(real_run / "privacy_ledger.jsonl")
    summary = ledger.summary(6)
    assert report.sample is not None
    assert report.sample.epsilon.max == pytest.approx(summary["max"], rel=1e-9)
    assert report.sample.histogram.total == 6
    assert report.noise_rng == "seeded" and report.noise_rng_source == "summary.json"
    assert audit_command(str(real_run), as_json=True, accountants="rdp,prv") == EXIT_CLEAN
    doc = json.loads(capsys.readouterr().out)
    assert doc["ledger"]["sample_lines"] == 8


def test_tampered_real_run_is_caught(real_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(real_run, tmp_path / "run"))
    lines = read_lines(run)
    lines[-1]["epsilon"] = 0.01
    write_lines(run, lines)
    report = audit_run(run, accountants=["rdp"])
    assert report.exit_code == EXIT_VIOLATIONS
    assert any(f.kind == "stored-epsilon" and f.line == len(lines) for f in report.findings)
