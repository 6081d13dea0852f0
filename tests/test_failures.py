"""Runs whose clients fail with real errors stop; injected faults stay data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedsim.cli.progress import RunProgress
from fedsim.clients.worker import SetupFailure, worker_state
from fedsim.engine.grid import RoundReport
from fedsim.engine.simulation import ServerRun, _server_loop
from fedsim.failures import ClientErrors, FailureWatch, short_reason
from fedsim.launch import client_side
from fedsim.protocol import ClientOutcome, CohortRequest
from fedsim.rundir import RunDir, read_jsonl
from tests.conftest import small_scenario
from tests.test_grid import InProcessGrid

EXPLODING = {"name": "tests.fixtures.nets:exploding_net"}


def serve(tmp_path: Path, **overrides: Any) -> tuple[ServerRun, BaseException | None]:
    sc = small_scenario(**overrides)
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    state = ServerRun(sc, rundir, RunProgress(sc, enabled=False), clients=client_side())
    error = None
    try:
        _server_loop(InProcessGrid(nodes=8), sc, state)
    except ClientErrors as exc:
        error = exc
    finally:
        state.close()
    return state, error


def test_short_reason_is_one_plain_line() -> None:
    ray_text = (
        "\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=12, ip=127.0.0.1)\n"
        'Traceback (most recent call last):\n  File "x.py", line 3, in f\n'
        "    raise ValueError('bad')\nValueError: bad\n"
    )
    assert short_reason(ray_text) == "ValueError: bad"
    assert short_reason(RuntimeError("two\nlines")) == "RuntimeError: two lines"
    long = short_reason(KeyError("k" * 1000))
    assert len(long) == 300 and long.endswith("...")


def test_a_model_raising_in_every_client_stops_the_run_after_round_one(
    tmp_path: Path, flower_run_context: Any
) -> None:
    # Before: every client failed, every round, and the run ended normally at chance.
    state, error = serve(tmp_path, model=EXPLODING)
    assert isinstance(error, ClientErrors)
    message = str(error)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("round 1: every client that trained failed with an error (4 of 4)")
    assert "RuntimeError: exploding net: forward refuses to run (a second line) at nets.py" in (
        message
    )
    assert state.metrics == []  # round 1 never completed
    # The ledger still charges the clients that started (short reason, one line) ...
    lines = read_jsonl(state.rundir.ledger)
    assert [x["status"] for x in lines] == ["failed"] * 4
    assert all("\n" not in x["error"] and len(x["error"]) <= 300 for x in lines)
    # ... and errors.log holds the full traceback, once for the four clients.
    log = (state.rundir.path / "errors.log").read_text()
    assert log.count("Traceback (most recent call last)") == 1
    assert "--- round 1, clients [" in log and "in forward" in log


def test_injected_failures_of_every_client_are_data_not_an_error(
    tmp_path: Path, flower_run_context: Any
) -> None:
    state, error = serve(tmp_path, faults__fail_probability=1.0)
    assert error is None
    assert [m["clients_failed"] for m in state.metrics] == [4, 4]
    assert all("injected failure" in f["error"] for m in state.metrics for f in m["failures"])
    assert not (state.rundir.path / "errors.log").exists()


def outcome(client: int, *, raised: bool = False, **extra: Any) -> ClientOutcome:
    error = "RuntimeError: x" if raised or extra else None
    return ClientOutcome(
        client=client, error=error, extra={**extra, **({"raised": 1} if raised else {})}
    )


def report(round: int, outcomes: list[ClientOutcome]) -> RoundReport:
    return RoundReport("train", round, outcomes, cohorts=1, cohort_errors=[])


def test_more_than_the_allowed_fraction_of_errors_stops_the_run(tmp_path: Path) -> None:
    watch = FailureWatch(small_scenario(faults__max_failed_fraction=0.5), tmp_path)
    watch.observe(report(1, [outcome(0, raised=True), outcome(1), outcome(2), outcome(3)]))
    watch.observe(report(2, [outcome(0, raised=True), outcome(1), outcome(2), outcome(3)]))
    watch.observe(report(3, [outcome(c, raised=c < 2) for c in range(4)]))  # 4 of 12
    watch.observe(report(4, [outcome(c, raised=c < 3) for c in range(4)]))  # 7 of 16
    watch.observe(report(5, [outcome(c, raised=c < 3) for c in range(4)]))  # 10 of 20: = 0.5
    with pytest.raises(ClientErrors) as info:
        watch.observe(report(6, [outcome(c, raised=c < 3) for c in range(4)]))  # 13 of 24
    assert str(info.value).startswith(
        "round 6: 13 of 24 client trainings so far failed with errors, more than "
        "faults.max_failed_fraction = 0.5; first: client 0: RuntimeError: x"
    )


def test_dropped_clients_do_not_count_and_an_injected_crash_is_data(tmp_path: Path) -> None:
    sc = small_scenario(faults__crash_worker_at=[2, 0], faults__max_failed_fraction=1.0)
    watch = FailureWatch(sc, tmp_path)
    # 1 client trained and raised, 3 dropped: every client that trained failed.
    dropped = [outcome(c, dropped=1) for c in (1, 2, 3)]
    with pytest.raises(ClientErrors, match=r"every client that trained failed .* \(1 of 1\)"):
        watch.observe(report(1, [outcome(0, raised=True), *dropped]))
    lost = [outcome(c, cohort_failed=1) for c in range(4)]
    FailureWatch(sc, tmp_path).observe(report(2, lost))  # the crash the scenario asked for
    with pytest.raises(ClientErrors, match="round 3: every client"):
        FailureWatch(sc, tmp_path).observe(report(3, lost))  # a crash nobody asked for


def test_a_worker_that_cannot_import_the_model_fails_its_cohort_in_one_line(
    tmp_path: Path,
) -> None:
    sc = small_scenario(dp__mode="off")
    data = json.loads(sc.fingerprint())
    data["model"] = {"name": "nopkg.nets:make_net"}  # importable in the driver, not here
    state = worker_state(json.dumps(data, sort_keys=True))
    assert isinstance(state, SetupFailure)
    req = CohortRequest(1, "train", "", clients=[3, 5], layouts=[{}, {}], records=[])
    outs = state.run_cohort(req)
    assert [o.client for o in outs] == [3, 5]
    assert outs[0].error is not None and "\n" not in outs[0].error
    assert outs[0].error.startswith("a worker could not set up the scenario: ModelError: ")
    assert "No module named 'nopkg'" in outs[0].error
    with pytest.raises(ClientErrors, match="round 1: a worker could not set up the scenario"):
        FailureWatch(sc, tmp_path).observe(report(1, outs))
    assert "Traceback" in (tmp_path / "errors.log").read_text()
