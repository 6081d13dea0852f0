"""Unreadable input: exit code 2 and a message that names the problem (and the line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsim.audit import EXIT_BAD_INPUT, AuditInputError, audit_command, audit_run
from fedsim.audit import inputs as audit_inputs
from tests.audit.rundirs import read_lines, write_lines, write_user_run
from tests.conftest import small_scenario


def _command(run: Path | str, capsys: pytest.CaptureFixture[str], **kw: object) -> tuple[int, str]:
    code = audit_command(str(run), as_json=kw.get("as_json", False), accountants=kw.get("acc"))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_corrupt_line_in_the_middle_names_its_number(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = clean_run / "privacy_ledger.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"steps": ', '"steps" ')  # a colon lost
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditInputError) as info:
        audit_run(clean_run, accountants=["rdp"])
    assert info.value.line_no == 3
    code, text = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT
    assert "line 3" in text and "not valid JSON" in text


def test_truncated_last_line_is_bad_input(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = clean_run / "privacy_ledger.jsonl"
    data = path.read_text()
    n_lines = data.count("\n")
    path.write_text(data[: len(data) - 25])  # a write cut short by a crash
    code, text = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT
    assert f"line {n_lines}" in text


def test_invalid_value_is_bad_input_with_line(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    lines[4]["sample_rate"] = 1.5
    write_lines(clean_run, lines)
    with pytest.raises(AuditInputError, match="line 5") as info:
        audit_run(clean_run, accountants=["rdp"])
    assert info.value.line_no == 5


def test_json_mode_reports_the_error_as_json(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_run / "privacy_ledger.jsonl").write_text('{"round": 1, "cli\n')
    code = audit_command(str(clean_run), as_json=True, accountants="rdp")
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_BAD_INPUT == doc["exit_code"]
    assert doc["line"] == 1 and "line 1" in doc["error"]


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("scenario.toml", "scenario.toml is missing"),
        ("privacy_ledger.jsonl", "privacy_ledger.jsonl is missing"),
    ],
)
def test_missing_files(
    clean_run: Path, capsys: pytest.CaptureFixture[str], remove: str, expected: str
) -> None:
    (clean_run / remove).unlink()
    code, text = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT
    assert expected in text


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _command(tmp_path / "nope", capsys)
    assert code == EXIT_BAD_INPUT and "does not exist" in text


def test_bad_scenario(clean_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clean_run / "scenario.toml"
    path.write_text(path.read_text().replace("population = 6", "population = -3"))
    code, text = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT
    assert "bad scenario" in text and "population" in text


def test_bad_summary_json(clean_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clean_run / "summary.json").write_text("{not json")
    code, text = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT and "summary.json" in text


def test_unknown_accountant_lists_the_allowed_ones(
    clean_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _command(clean_run, capsys, acc="rdp,moments")
    assert code == EXIT_BAD_INPUT
    assert "'moments'" in text
    for name in ("rdp", "prv", "gdp", "pld"):
        assert name in text.split("allowed:")[1]
    with pytest.raises(AuditInputError, match="empty"):
        audit_inputs.parse_accountants(" , ")


def test_pld_without_dp_accounting_says_how_to_install(
    clean_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_inputs, "dp_accounting_available", lambda: False)
    code, text = _command(clean_run, capsys, acc="rdp,pld")
    assert code == EXIT_BAD_INPUT
    assert "pip install 'fedsim[audit]'" in text
    # Not requested: the default list leaves pld out instead of failing.
    assert "pld" not in audit_inputs.default_accountants(audit_inputs.load_run(clean_run).scenario)


def test_corrupt_user_level_line_names_its_number(tmp_path: Path) -> None:
    run = write_user_run(
        tmp_path / "run", small_scenario(dp__mode="user"), [[0, 1, 2, 3], [1, 2, 3, 4]]
    )
    lines = read_lines(run)
    del lines[1]["clients_sampled"]
    write_lines(run, lines)
    with pytest.raises(AuditInputError, match="clients_sampled") as info:
        audit_run(run, accountants=["rdp"])
    assert info.value.line_no == 2
    lines[1]["clients_sampled"] = 4
    lines[0]["status"] = "lost"
    write_lines(run, lines)
    with pytest.raises(AuditInputError, match="'status'") as info:
        audit_run(run, accountants=["rdp"])
    assert info.value.line_no == 1


# --------------------------------------------------------------------------- clients.json


def test_a_run_without_clients_json_warns_instead_of_loading_the_data(clean_run: Path) -> None:
    # A run written before clients.json existed: the audit says what it cannot check.
    (clean_run / "clients.json").unlink()
    lines = read_lines(clean_run)
    lines[0]["steps"] += 1000  # more steps than planned: only the shard size reveals it
    write_lines(clean_run, lines)
    report = audit_run(clean_run, accountants=["rdp"])
    kinds = {f.kind for f in report.findings}
    assert "shards-unknown" in kinds
    assert "plan-mismatch" not in kinds


def test_the_plans_are_checked_against_clients_json(clean_run: Path) -> None:
    lines = read_lines(clean_run)
    lines[0]["steps"] += 1000
    write_lines(clean_run, lines)
    report = audit_run(clean_run, accountants=["rdp"])
    assert [f.line for f in report.findings if f.kind == "plan-mismatch"] == [1]
    assert "shards-unknown" not in {f.kind for f in report.findings}


def test_the_shard_sizes_come_from_the_run_directory(clean_run: Path) -> None:
    sizes = json.loads((clean_run / "clients.json").read_text())["train_shard_sizes"]
    loaded = audit_inputs.load_run(clean_run)
    assert loaded.shard_sizes is not None and loaded.shard_sizes.tolist() == sizes
    # Shrink every shard to the batch size: every line's sample rate is now wrong.
    doc = {"population": len(sizes), "train_shard_sizes": [16] * len(sizes)}
    (clean_run / "clients.json").write_text(json.dumps(doc))
    report = audit_run(clean_run, accountants=["rdp"])
    assert len([f for f in report.findings if f.kind == "sample-rate"]) == len(
        read_lines(clean_run)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"population": 6, "train_shard_sizes": [1, 2', "cannot read"),
        ('{"population": 6, "train_shard_sizes": [1, -2, 3, 4, 5, 6]}', "integers >= 0"),
        ('{"population": 5, "train_shard_sizes": [1, 2, 3, 4, 5, 6]}', "'population' = 5"),
        ('{"population": 3, "train_shard_sizes": [1, 2, 3]}', "lists 3 clients"),
    ],
)
def test_a_corrupt_clients_json_is_bad_input(
    clean_run: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (clean_run / "clients.json").write_text(text)
    with pytest.raises(AuditInputError, match=message):
        audit_run(clean_run, accountants=["rdp"])
    code, out = _command(clean_run, capsys, acc="rdp")
    assert code == EXIT_BAD_INPUT
    assert "clients.json" in out
