"""The ledger line schema (fedsim.privacy.records): the bytes written, and one reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.privacy import LedgerError, PrivacyEvent, PrivacyLedger, records

EVENT = PrivacyEvent(
    noise_multiplier=1.1, sample_rate=0.05, steps=20, max_grad_norm=1.0, delta=1e-5
)


def test_the_ledger_writes_the_documented_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=1e-5) as ledger:
        eps = ledger.record(round=3, client=17, event=EVENT)
        user = ledger.record_user(
            round=3,
            noise_multiplier=2.0,
            sample_rate=0.5,
            clip_norm=1.0,
            sampling="poisson",
            clients=[4, 2],
        )
    assert path.read_text(encoding="utf-8") == (
        '{"round": 3, "client": 17, "level": "sample", "status": "trained", '
        '"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 20, "max_grad_norm": 1.0, '
        f'"delta": 1e-05, "accountant": "rdp", "epsilon": {eps!r}}}\n'
        '{"round": 3, "level": "user", "status": "released", "noise_multiplier": 2.0, '
        '"sample_rate": 0.5, "steps": 1, "max_grad_norm": 1.0, "delta": 1e-05, '
        f'"accountant": "rdp", "epsilon": {user!r}, "sampling": "poisson", '
        '"clients_sampled": 2, "clients": [2, 4]}\n'
    )
    loaded = PrivacyLedger.load(path)
    assert loaded.epsilon_of(17) == pytest.approx(eps, rel=1e-12)
    assert loaded.user_epsilon() == pytest.approx(user, rel=1e-12)


def test_user_lines_are_validated_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"round": 1, "level": "user", "status": "released"}\n')
    assert records.read_records(path)[0]["round"] == 1  # the resume keeps it as written
    with pytest.raises(LedgerError, match=r"line 1: user-level line misses"):
        records.read_records(path, check_user=True)


def test_every_status_name_comes_from_one_tuple() -> None:
    assert records.STATUSES == ("trained", "failed", "late", "discarded")
    assert set(records.USER_STATUSES) == {"released", "trained", "failed", "discarded"}
