"""PrivacyLedger: per-client composition, the JSONL file, reloading, corrupt files."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from fedsim.privacy import (
    LedgerError,
    PrivacyError,
    PrivacyEvent,
    PrivacyLedger,
    epsilon,
    epsilon_of_history,
    read_ledger,
)
from fedsim.privacy.ledger import LINE_KEYS

DELTA = 1e-5


def event(z: float = 1.1, q: float = 0.02, steps: int = 50, delta: float = DELTA) -> PrivacyEvent:
    """A client's report with the fields the tests do not care about filled in."""
    return PrivacyEvent(
        noise_multiplier=z, sample_rate=q, steps=steps, max_grad_norm=1.0, delta=delta
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines()]


# --------------------------------------------------------------------------- composition


def test_one_client_composes_like_opacus(tmp_path: Path) -> None:
    history = [(1.1, 0.02, 50), (1.1, 0.02, 50), (0.9, 0.05, 20), (1.5, 0.01, 300)]
    with PrivacyLedger(tmp_path / "ledger.jsonl", delta=DELTA) as ledger:
        returned = [
            ledger.record(round=r, client=3, event=event(z, q, n))
            for r, (z, q, n) in enumerate(history, start=1)
        ]
    accountant = RDPAccountant()
    for z, q, n in history:
        for _ in range(n):
            accountant.step(noise_multiplier=z, sample_rate=q)
    expected = accountant.get_epsilon(delta=DELTA)
    assert ledger.epsilon_of(3) == pytest.approx(expected, rel=1e-9)
    assert ledger.epsilon_of(3) == pytest.approx(epsilon_of_history(history, delta=DELTA), rel=1e-9)
    assert returned[-1] == ledger.epsilon_of(3)
    # Cumulative epsilon after each line is the epsilon of the prefix.
    for k, eps in enumerate(returned, start=1):
        assert eps == pytest.approx(epsilon_of_history(history[:k], delta=DELTA), rel=1e-9)
    assert ledger.participations(3) == 4


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_history_accountants_compose_like_epsilon_of_history(accountant: str) -> None:
    ledger = PrivacyLedger(None, delta=DELTA, accountant=accountant)
    for r in range(3):
        ledger.record(round=r, client=0, event=event(1.0, 0.01, 100))
    expected = epsilon_of_history([(1.0, 0.01, 300)], delta=DELTA, accountant=accountant)
    assert ledger.epsilon_of(0) == pytest.approx(expected, rel=1e-9)


def test_pld_ledger_composes_like_epsilon_of_history() -> None:
    ledger = PrivacyLedger(None, delta=DELTA, accountant="pld")
    ledger.record(round=1, client=0, event=event(2.0, 0.01, 20))
    ledger.record(round=2, client=0, event=event(3.0, 0.02, 10))
    expected = epsilon_of_history([(2.0, 0.01, 20), (3.0, 0.02, 10)], delta=DELTA, accountant="pld")
    assert ledger.epsilon_of(0) == pytest.approx(expected, rel=1e-9)


def test_gdp_ledger_refuses_a_changed_mechanism_and_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA, accountant="gdp") as ledger:
        first = ledger.record(round=1, client=0, event=event(1.0, 0.01, 100))
        with pytest.raises(PrivacyError, match="gdp"):
            ledger.record(round=2, client=0, event=event(1.2, 0.01, 100))
        assert ledger.epsilon_of(0) == first
        assert ledger.participations(0) == 1
    assert len(lines(path)) == 1


def test_clients_compose_separately() -> None:
    ledger = PrivacyLedger(None, delta=DELTA)
    ledger.record(round=1, client=1, event=event(steps=100))
    ledger.record(round=1, client=2, event=event(steps=10))
    ledger.record(round=2, client=1, event=event(steps=100))
    assert ledger.epsilon_of(1) == pytest.approx(
        epsilon(noise_multiplier=1.1, sample_rate=0.02, steps=200, delta=DELTA), rel=1e-9
    )
    assert ledger.epsilon_of(2) == pytest.approx(
        epsilon(noise_multiplier=1.1, sample_rate=0.02, steps=10, delta=DELTA), rel=1e-9
    )
    assert ledger.epsilons() == {1: ledger.epsilon_of(1), 2: ledger.epsilon_of(2)}


def test_never_seen_client_has_spent_nothing() -> None:
    ledger = PrivacyLedger(None, delta=DELTA)
    ledger.record(round=1, client=1, event=event())
    assert ledger.epsilon_of(99) == 0.0
    assert ledger.participations(99) == 0
    assert 99 not in ledger.epsilons()


def test_zero_steps_and_failed_events_get_a_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        assert ledger.record(round=1, client=5, event=event(steps=0), status="failed") == 0.0
        spent = ledger.record(
            round=2, client=5, event=event(steps=30), status="failed", error="worker died"
        )
    assert spent == pytest.approx(
        epsilon(noise_multiplier=1.1, sample_rate=0.02, steps=30, delta=DELTA), rel=1e-9
    )
    first, second = lines(path)
    assert (first["status"], first["steps"], first["epsilon"]) == ("failed", 0, 0.0)
    assert second["error"] == "worker died"
    assert ledger.participations(5) == 2


def test_projected_epsilon_does_not_record() -> None:
    ledger = PrivacyLedger(None, delta=DELTA)
    ledger.record(round=1, client=0, event=event())
    before = ledger.epsilon_of(0)
    projected = ledger.projected_epsilon(0, event(steps=80))
    assert ledger.epsilon_of(0) == before
    assert ledger.participations(0) == 1
    assert ledger.record(round=2, client=0, event=event(steps=80)) == projected
    assert ledger.projected_epsilon(7, event()) == ledger.record(round=2, client=7, event=event())


def test_summary_counts_never_seen_clients_as_zero() -> None:
    ledger = PrivacyLedger(None, delta=DELTA)
    ledger.record(round=1, client=0, event=event(steps=10))
    ledger.record(round=1, client=1, event=event(steps=100))
    ledger.record(round=1, client=2, event=event(steps=1000))
    e0, e1, e2 = (ledger.epsilon_of(c) for c in range(3))
    assert 0 < e0 < e1 < e2
    # 5 clients: [0, 0, e0, e1, e2] -> median e0.
    assert ledger.summary(5) == {"min": 0.0, "median": e0, "max": e2}
    # 4 clients: [0, e0, e1, e2] -> median (e0 + e1) / 2.
    assert ledger.summary(4) == {
        "min": 0.0,
        "median": statistics.median([0, e0, e1, e2]),
        "max": e2,
    }
    assert ledger.summary(3) == {"min": e0, "median": e1, "max": e2}
    with pytest.raises(PrivacyError, match="population"):
        ledger.summary(2)
    assert PrivacyLedger(None, delta=DELTA).summary(10) == {"min": 0.0, "median": 0.0, "max": 0.0}


def test_no_noise_gives_infinite_epsilon_and_the_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        assert ledger.record(round=1, client=0, event=event(z=0.0)) == math.inf
    assert lines(path)[0]["epsilon"] == math.inf
    assert PrivacyLedger.load(path).epsilon_of(0) == math.inf


def test_many_records_fast_path_matches_direct_composition() -> None:
    # 1,000 records in a round (the size the server handles); rdp sums cached vectors.
    ledger = PrivacyLedger(None, delta=DELTA)
    for client in range(1000):
        ledger.record(round=1, client=client, event=event(q=0.01 + 0.01 * (client % 4)))
    for client in range(1000):
        ledger.record(round=2, client=client, event=event(q=0.01 + 0.01 * (client % 4)))
    for client in (0, 1, 2, 3, 999):
        q = 0.01 + 0.01 * (client % 4)
        direct = epsilon(noise_multiplier=1.1, sample_rate=q, steps=100, delta=DELTA)
        assert ledger.epsilon_of(client) == pytest.approx(direct, rel=1e-9)


# --------------------------------------------------------------------------- arguments


def test_event_validation() -> None:
    with pytest.raises(PrivacyError, match=r"sample_rate must be a number in \(0, 1\]"):
        event(q=0.0)
    with pytest.raises(PrivacyError, match="max_grad_norm must be a finite number > 0"):
        PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=1, max_grad_norm=0.0, delta=DELTA)
    with pytest.raises(PrivacyError, match="steps must be an integer >= 0"):
        event(steps=-2)
    with pytest.raises(TypeError):
        PrivacyEvent(1.0, 0.1, 1, 1.0, DELTA, 3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(round=-1), "round must be an integer >= 0"),
        (dict(client="7"), "client must be an integer >= 0"),
        (dict(status="ok"), r"status must be one of \('trained', 'failed', 'late', 'discarded'\)"),
        (dict(epsilon=3.0), r"extra fields \['epsilon'\] would overwrite"),
        (dict(event=event(delta=1e-6)), "event.delta=1e-06 differs from the ledger's delta"),
        (dict(event=(1.0, 0.1, 10)), "event must be a PrivacyEvent"),
    ],
)
def test_bad_record_arguments_record_nothing(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path, delta=DELTA)
    args = dict(round=1, client=0, event=event())
    args.update(kwargs)
    with pytest.raises(PrivacyError, match=message):
        ledger.record(**args)
    ledger.close()
    assert path.read_text() == ""
    assert ledger.participations(0) == 0


def test_unserialisable_extra_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        with pytest.raises(TypeError):
            ledger.record(round=1, client=0, event=event(), error=object())
        assert ledger.epsilon_of(0) == 0.0
    assert path.read_text() == ""


def test_ledger_arguments() -> None:
    with pytest.raises(PrivacyError, match=r"delta must be a number in \(0, 1\)"):
        PrivacyLedger(None, delta=0.0)
    with pytest.raises(PrivacyError, match="accountant must be one of"):
        PrivacyLedger(None, delta=DELTA, accountant="moments")


def test_closed_ledger_refuses_records(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", delta=DELTA)
    ledger.close()
    ledger.close()  # idempotent
    with pytest.raises(LedgerError, match="closed"):
        ledger.record(round=1, client=0, event=event())


# --------------------------------------------------------------------------- the file


def test_lines_have_the_documented_keys_in_order(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        eps = ledger.record(round=3, client=17, event=event(1.1, 0.05, 20))
        ledger.record(round=4, client=17, event=event(1.1, 0.05, 20), status="failed", error="x")
    first, second = lines(path)
    assert tuple(first) == LINE_KEYS
    assert LINE_KEYS == (
        "round", "client", "level", "status", "noise_multiplier", "sample_rate", "steps",
        "max_grad_norm", "delta", "accountant", "epsilon",
    )  # fmt: skip
    assert first == {
        "round": 3, "client": 17, "level": "sample", "status": "trained",
        "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 20, "max_grad_norm": 1.0,
        "delta": 1e-05, "accountant": "rdp", "epsilon": eps,
    }  # fmt: skip
    assert tuple(second) == (*LINE_KEYS, "error")
    assert read_ledger(path) == [first, second]


def test_flush_puts_lines_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path, delta=DELTA)
    ledger.record(round=1, client=0, event=event())
    ledger.flush()
    assert len(lines(path)) == 1  # read through another handle while still open
    ledger.close()


def test_existing_ledger_file_is_not_silently_extended(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        ledger.record(round=1, client=0, event=event())
    with pytest.raises(LedgerError, match=r"use PrivacyLedger\.load"):
        PrivacyLedger(path, delta=DELTA)


def test_load_recomposes_without_trusting_stored_epsilons(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        for r in range(1, 4):
            for client in range(5):
                ledger.record(round=r, client=client, event=event(steps=10 * (client + 1)))
    # Tamper with one stored epsilon: load must not believe it.
    text = path.read_text().splitlines()
    doctored = json.loads(text[0])
    doctored["epsilon"] = 0.001
    text[0] = json.dumps(doctored)
    path.write_text("\n".join(text) + "\n")
    before = path.read_bytes()

    loaded = PrivacyLedger.load(path)
    assert (loaded.delta, loaded.accountant) == (DELTA, "rdp")
    assert loaded.epsilons() == pytest.approx(ledger.epsilons(), rel=1e-12)
    assert [loaded.participations(c) for c in range(5)] == [3] * 5
    assert path.read_bytes() == before  # loading appends nothing

    # Recording after load appends to the same file; a second load sees it all.
    eps = loaded.record(round=4, client=0, event=event(steps=10))
    loaded.close()
    assert len(lines(path)) == 16
    again = PrivacyLedger.load(path)
    assert again.epsilon_of(0) == pytest.approx(eps, rel=1e-12)
    assert again.participations(0) == 4


def test_load_with_another_accountant_or_delta(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        ledger.record(round=1, client=0, event=event(steps=100))
        ledger.record(round=2, client=0, event=event(steps=100))
    as_prv = PrivacyLedger.load(path, accountant="prv")
    assert as_prv.epsilon_of(0) == pytest.approx(
        epsilon_of_history([(1.1, 0.02, 200)], delta=DELTA, accountant="prv"), rel=1e-9
    )
    at_other_delta = PrivacyLedger.load(path, delta=1e-6)
    assert at_other_delta.epsilon_of(0) == pytest.approx(
        epsilon(noise_multiplier=1.1, sample_rate=0.02, steps=200, delta=1e-6), rel=1e-9
    )


def test_load_needs_delta_when_it_cannot_infer_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LedgerError, match="pass delta="):
        PrivacyLedger.load(empty)
    ledger = PrivacyLedger.load(empty, delta=DELTA)
    assert ledger.epsilons() == {}
    ledger.record(round=1, client=0, event=event())
    ledger.close()
    assert len(lines(empty)) == 1

    mixed = tmp_path / "mixed.jsonl"
    with PrivacyLedger(mixed, delta=DELTA) as a:
        a.record(round=1, client=0, event=event())
    b = PrivacyLedger.load(mixed, accountant="gdp")
    b.record(round=2, client=0, event=event())
    b.close()
    with pytest.raises(LedgerError, match="disagree on 'accountant'"):
        PrivacyLedger.load(mixed)


def test_user_level_lines_are_kept_not_composed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        ledger.record(round=1, client=0, event=event())
    user_line = {
        "round": 1, "level": "user", "status": "trained", "sampling": "poisson",
        "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1, "delta": DELTA,
    }  # fmt: skip
    with path.open("a") as f:
        f.write(json.dumps(user_line) + "\n")
    loaded = PrivacyLedger.load(path)
    assert loaded.user_events == [user_line]
    assert list(loaded.epsilons()) == [0]


def test_a_valid_last_line_without_newline_is_read_and_extended(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        ledger.record(round=1, client=0, event=event())
    path.write_text(path.read_text().rstrip("\n"))
    loaded = PrivacyLedger.load(path)
    loaded.record(round=2, client=0, event=event())
    loaded.close()
    assert [line["round"] for line in lines(path)] == [1, 2]


# --------------------------------------------------------------------------- corrupt files


def _good_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "good.jsonl"
    with PrivacyLedger(path, delta=DELTA) as ledger:
        for r in range(1, 4):
            ledger.record(round=r, client=r, event=event())
    return path.read_text().splitlines()


def _corrupt(line: str, how: str) -> str:
    record = json.loads(line)
    if how == "truncated":
        return line[: len(line) // 2]
    if how == "not json":
        return "round 2 client 2"
    if how == "not an object":
        return json.dumps([record])
    if how == "empty":
        return ""
    if how == "missing steps":
        del record["steps"]
    elif how == "steps is text":
        record["steps"] = "ten"
    elif how == "steps is a float":
        record["steps"] = 10.5
    elif how == "client is bool":
        record["client"] = True
    elif how == "bad sample rate":
        record["sample_rate"] = 1.5
    elif how == "bad status":
        record["status"] = "maybe"
    elif how == "bad level":
        record["level"] = "client"
    elif how == "nan epsilon":
        record["epsilon"] = math.nan
    elif how == "unknown accountant":
        record["accountant"] = "moments"
    return json.dumps(record)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "not valid JSON"),
        ("not json", "not valid JSON"),
        ("not an object", "expected a JSON object, got list"),
        ("empty", "empty line"),
        ("missing steps", r"missing required field\(s\) \['steps'\]"),
        ("steps is text", "steps must be an integer >= 0, got 'ten'"),
        ("steps is a float", "steps must be an integer >= 0, got 10.5"),
        ("client is bool", "'client' must be an integer >= 0, got True"),
        ("bad sample rate", r"sample_rate must be a number in \(0, 1\], got 1.5"),
        ("bad status", "'status' must be one of"),
        ("bad level", "'level' must be 'sample' or 'user'"),
        ("nan epsilon", "'epsilon' must be a number >= 0"),
        ("unknown accountant", "accountant must be one of"),
    ],
)
@pytest.mark.parametrize("line_no", [1, 2, 3])
def test_corrupt_line_names_file_and_line(
    tmp_path: Path, how: str, message: str, line_no: int
) -> None:
    text = _good_lines(tmp_path)
    text[line_no - 1] = _corrupt(text[line_no - 1], how)
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(text) + "\n")
    for read in (read_ledger, PrivacyLedger.load):
        with pytest.raises(LedgerError, match=message) as info:
            read(path)
        assert info.value.line_no == line_no
        assert info.value.path == path
        assert f"{path}, line {line_no}:" in str(info.value)


def test_truncated_last_line_after_a_crash_is_reported(tmp_path: Path) -> None:
    text = _good_lines(tmp_path)
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(text) + "\n" + text[0][:20])  # crash mid-write
    with pytest.raises(LedgerError, match="line 4: not valid JSON"):
        PrivacyLedger.load(path)


def test_binary_garbage_is_reported_with_its_line(tmp_path: Path) -> None:
    text = _good_lines(tmp_path)
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(("\n".join(text[:2]) + "\n").encode() + b"\xff\x00\x00\n")
    with pytest.raises(LedgerError, match="line 3: not UTF-8"):
        read_ledger(path)


def test_ledger_error_is_a_value_error() -> None:
    assert issubclass(LedgerError, ValueError)
    err = LedgerError("boom", path="x.jsonl", line_no=7)
    assert (err.path, err.line_no, str(err)) == (Path("x.jsonl"), 7, "x.jsonl, line 7: boom")
