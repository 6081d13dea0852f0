"""Run directory safety: path rules, --overwrite, the lock, full disks, resume checks.

Everything here runs without Ray: the checks must refuse before anything starts.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fedsim.engine.simulation as simulation
import fedsim.rundir as rundir_mod
from fedsim.cli.commands import main
from fedsim.config import Scenario, ScenarioError
from fedsim.engine.checkpoint import Checkpoint, plan_resume, save_checkpoint, scenario_hash
from fedsim.privacy import PrivacyEvent, PrivacyLedger
from fedsim.rundir import MARKER, JsonLines, RunDir, read_jsonl
from tests.conftest import small_scenario


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # rich would break long paths across lines


# ----------------------------------------------------------------- item 1: names, overwrite


@pytest.mark.parametrize("name", ["..", ".", "", "/abs/dir", "../../x", "a/b", "a\\b", "x y"])
def test_a_name_that_is_not_a_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(ScenarioError, match=r"name = .*plain identifier.*not '\.' or '\.\.'"):
        Scenario.from_dict({"name": name})


def test_plain_names_are_accepted() -> None:
    assert Scenario.from_dict({"name": "noise_1.0_seed-2"}).name == "noise_1.0_seed-2"


def test_dotdot_name_with_overwrite_deletes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "precious.txt").write_text("mine")
    path = work / "s.toml"
    path.write_text(small_scenario().to_toml().replace('name = "tiny"', 'name = ".."'))
    monkeypatch.chdir(work)
    assert main(["run", str(path), "--overwrite"]) == 2
    assert "plain identifier" in _flat(capsys.readouterr().err)
    assert (work / "precious.txt").read_text() == "mine"


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_text("jpeg")
    (target / "scenario.toml").write_text("name = 'not fedsim's'\n")  # no marker: not a run
    path = tmp_path / "s.toml"
    path.write_text(small_scenario().to_toml())
    assert main(["run", str(path), "--out", str(target), "--overwrite"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "not a fedsim run directory" in err and "nothing was deleted" in err
    assert sorted(p.name for p in target.iterdir()) == ["holiday.jpg", "scenario.toml"]


def test_overwrite_removes_only_fedsims_own_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_text(run.scenario, small_scenario().to_toml())
    run.metrics.write_text('{"round": 1}\n')
    run.summary.write_text("{}")
    save_checkpoint(run.checkpoints, _ckpt(1, 0, 1, "h"))
    (run.path / "notes.txt").write_text("keep")
    (run.path / "mine").mkdir()
    (run.path / "mine" / "data.csv").write_text("1,2")
    run.unlock()

    again = RunDir(run.path)
    again.create(overwrite=True)
    again.unlock()
    left = sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*"))
    assert left == [
        rundir_mod.LOCK,
        MARKER,
        "checkpoints",
        "mine",
        "mine/data.csv",
        "notes.txt",
        "plots",
    ]


# ----------------------------------------------------------------- item 3: the lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from fedsim.rundir import RunDir
    run = RunDir(sys.argv[1])
    run.create()
    run.write_text(run.scenario, sys.stdin.read())
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "live"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdin.write(small_scenario().to_toml())  # type: ignore[union-attr]
        holder.stdin.close()  # type: ignore[union-attr]
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        before = sorted(p.name for p in out.iterdir())
        assert main(["resume", str(out)]) == 2
        assert f"{out} is in use by PID {holder.pid}" in _flat(capsys.readouterr().err)
        path = tmp_path / "s.toml"
        path.write_text(small_scenario().to_toml())
        assert main(["run", str(path), "--out", str(out), "--overwrite"]) == 2
        assert f"in use by PID {holder.pid}" in _flat(capsys.readouterr().err)
        assert sorted(p.name for p in out.iterdir()) == before  # nothing deleted
    finally:
        holder.kill()
        holder.wait(timeout=30)
    RunDir(out).lock()  # released with the holder's death


# ----------------------------------------------------------------- helpers: run directories


def _ckpt(rnd: int, ledger_lines: int, metrics_lines: int, h: str) -> Checkpoint:
    return Checkpoint(
        round=rnd,
        weights={"w": torch.zeros(2)},
        strategy_state={},
        ledger_lines=ledger_lines,
        metrics_lines=metrics_lines,
        scenario_hash=h,
    )


EVENT = PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=20, max_grad_norm=1.0, delta=1e-5)


def _killed_run(tmp_path: Path, *, secure_rng: bool = False) -> tuple[RunDir, Scenario]:
    """A run killed after round 2's ledger and metrics lines, before its checkpoint."""
    sc = small_scenario(dp__secure_rng=secure_rng, rounds=4)
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_text(run.scenario, sc.to_toml())
    ledger = PrivacyLedger(run.ledger, delta=sc.dp.delta)
    for rnd in (1, 2):
        for client in (0, 1):
            ledger.record(round=rnd, client=client, event=EVENT)
    ledger.close()
    run.metrics.write_text('{"round": 1}\n{"round": 2}\n')
    save_checkpoint(run.checkpoints, _ckpt(1, 2, 1, scenario_hash(sc.fingerprint())))
    run.unlock()
    return run, sc


def _plan(run: RunDir, sc: Scenario):  # type: ignore[no-untyped-def]
    return plan_resume(
        run.metrics,
        run.ledger,
        run.checkpoints,
        expected_hash=scenario_hash(sc.fingerprint()),
        fresh_noise=sc.dp.secure_rng,
    )


def _snapshot(path: Path, *, lock: bool = True) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file (`lock=False`: without the lock file, which a
    process that takes the lock rewrites with its PID)."""
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file() and (lock or p.name != rundir_mod.LOCK)
    }


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(simulation, "_simulate", refuse)


# ----------------------------------------------------------------- item 5 and 9: resume checks


def test_a_refused_resume_leaves_every_file_byte_identical(tmp_path: Path, no_ray, capsys) -> None:  # type: ignore[no-untyped-def]
    run, sc = _killed_run(tmp_path)
    # The checkpoint claims more ledger lines than the file has: refused...
    save_checkpoint(run.checkpoints, _ckpt(1, 9, 1, scenario_hash(sc.fingerprint())))
    before = _snapshot(run.path, lock=False)
    assert main(["resume", str(run.path)]) == 2
    assert "expects at least 9" in _flat(capsys.readouterr().err)
    # ...and metrics.jsonl was not cut before the refusal
    assert _snapshot(run.path, lock=False) == before


def test_resume_with_a_corrupt_ledger_line_exits_2(tmp_path: Path, no_ray, capsys) -> None:  # type: ignore[no-untyped-def]
    run, _ = _killed_run(tmp_path)
    lines = run.ledger.read_text().splitlines(keepends=True)
    run.ledger.write_text('{"round": 1, "cli\n' + "".join(lines[1:]))
    before = run.metrics.read_bytes()
    assert main(["resume", str(run.path)]) == 2
    err = _flat(capsys.readouterr().err)
    assert "privacy_ledger.jsonl, line 1" in err and "not valid JSON" in err
    assert run.metrics.read_bytes() == before


def test_resume_with_a_corrupt_metrics_line_exits_2(tmp_path: Path, no_ray, capsys) -> None:  # type: ignore[no-untyped-def]
    run, _ = _killed_run(tmp_path)
    run.metrics.write_text('{"round": 1\n{"round": 2}\n')
    before = run.ledger.read_bytes()
    assert main(["resume", str(run.path)]) == 2
    assert "metrics.jsonl, line 1: not valid JSON" in _flat(capsys.readouterr().err)
    assert run.ledger.read_bytes() == before


def test_resume_into_a_read_only_directory_exits_2(  # type: ignore[no-untyped-def]
    tmp_path: Path, no_ray, monkeypatch, capsys
) -> None:
    run, _ = _killed_run(tmp_path)
    before = _snapshot(run.path, lock=False)

    def read_only(path: Path, data: bytes) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(rundir_mod, "atomic_write", read_only)
    assert main(["resume", str(run.path)]) == 2
    err = _flat(capsys.readouterr().err)
    assert "read-only file system on" in err and "the run is resumable" in err
    assert _snapshot(run.path, lock=False) == before


# ----------------------------------------------------------------- item 6: final newline


def test_metrics_file_repairs_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1}')  # killed before the newline reached the disk
    lines = JsonLines(path)
    lines.write({"round": 2})
    lines.close()
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]


def test_resume_puts_back_the_newline_of_a_kept_metrics_line(tmp_path: Path) -> None:
    run, sc = _killed_run(tmp_path)
    run.metrics.write_text('{"round": 1}')
    plan = _plan(run, sc)
    assert plan.metrics == b'{"round": 1}\n'


# ----------------------------------------------------------------- item 11: finished runs


def test_resuming_a_finished_run_touches_nothing(tmp_path: Path, no_ray, capsys) -> None:  # type: ignore[no-untyped-def]
    run, _ = _killed_run(tmp_path)
    torch.save({"w": torch.zeros(2)}, run.model)
    run.write_json(run.summary, {"scenario": "tiny", "rounds": 2, "wall_seconds": 1.5})
    (run.path / rundir_mod.LOCK).unlink()
    before = _snapshot(run.path)
    assert main(["resume", str(run.path)]) == 0
    assert "already complete" in _flat(capsys.readouterr().out)
    assert _snapshot(run.path) == before  # bytes and mtimes; no lock file either


# ----------------------------------------------------------------- item 4: summary last, full disk


def test_summary_is_written_last_and_a_full_disk_is_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "full"

    def fake_simulate(scenario: Scenario, state: simulation.ServerRun) -> None:
        state.metrics.append({"round": 1, "clients_trained": 4, "clients_failed": 0})
        state.final_state = {"w": torch.ones(3)}

    real_write = rundir_mod.atomic_write

    def disk_fills_at_summary(path: Path, data: bytes) -> None:
        if path.name == "summary.json":
            assert (out / "model.pt").is_file() and any((out / "plots").iterdir())
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(simulation, "_simulate", fake_simulate)
    monkeypatch.setattr(rundir_mod, "atomic_write", disk_fills_at_summary)
    path = tmp_path / "s.toml"
    path.write_text(small_scenario(dp__mode="off").to_toml())
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "no space left on" in err and "MB free" in err and "the run is resumable" in err
    assert not (out / "summary.json").exists() and not (out / "summary.json.tmp").exists()
    assert main(["results", str(out)]) == 2  # not listed as a finished run
    captured = capsys.readouterr()
    assert "not a finished run" in _flat(captured.err) and "tiny" not in captured.out


def test_checkpoints_on_a_full_disk_raise_oserror_not_torch_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedsim.engine.checkpoint as checkpoint_mod

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_mod, "atomic_write", full)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, _ckpt(1, 0, 0, "h"))
    mapped = rundir_mod.storage_error(info.value, tmp_path)
    assert mapped is not None and "no space left on" in str(mapped)


# ----------------------------------------------------------------- issue 10 item 4: discarded


def test_secure_rng_resume_keeps_the_killed_attempt_charged(tmp_path: Path) -> None:
    run, sc = _killed_run(tmp_path, secure_rng=True)
    plan = _plan(run, sc)
    assert (plan.discarded, plan.dropped) == (2, 0)
    run.write_bytes(run.ledger, plan.ledger)  # type: ignore[arg-type]
    statuses = [r["status"] for r in read_jsonl(run.ledger)]
    assert statuses == ["trained", "trained", "discarded", "discarded"]

    resumed = PrivacyLedger.load(run.ledger, delta=sc.dp.delta)
    for client in (0, 1):  # round 2 runs again, with fresh noise
        resumed.record(round=2, client=client, event=EVENT)
    clean = PrivacyLedger(None, delta=sc.dp.delta)
    for _ in (1, 2):
        clean.record(round=0, client=0, event=EVENT)
    three = PrivacyLedger(None, delta=sc.dp.delta)
    for _ in (1, 2, 3):
        three.record(round=0, client=0, event=EVENT)
    assert resumed.epsilon_of(0) > clean.epsilon_of(0)
    assert resumed.epsilon_of(0) == pytest.approx(three.epsilon_of(0), rel=1e-12)


def test_seeded_resume_drops_the_killed_attempt(tmp_path: Path) -> None:
    run, sc = _killed_run(tmp_path, secure_rng=False)
    plan = _plan(run, sc)
    assert (plan.discarded, plan.dropped) == (0, 2)
    assert plan.ledger is not None and len(plan.ledger.decode().splitlines()) == 2


def test_a_torn_last_ledger_line_is_not_kept(tmp_path: Path) -> None:
    run, sc = _killed_run(tmp_path, secure_rng=True)
    with open(run.ledger, "a") as fh:
        fh.write('{"round": 3, "cli')
    plan = _plan(run, sc)
    assert (plan.discarded, plan.dropped) == (2, 1)
    assert [json.loads(x)["status"] for x in plan.ledger.decode().splitlines()][-1] == "discarded"  # type: ignore[union-attr]


def test_overwrite_list_covers_every_report_figure_and_tracking_output() -> None:
    from pathlib import Path as _Path

    from fedsim.engine import tracking
    from fedsim.report.figures import FIGURES
    from fedsim.rundir import OWN_FILES, OWN_FOLDERS

    assert {_Path(name).name for name in FIGURES} <= set(OWN_FILES)
    assert {tracking.STATE_FILE, tracking.MLFLOW_DB} <= set(OWN_FILES)
    assert {tracking.TENSORBOARD_DIR, tracking.MLRUNS_DIR} <= set(OWN_FOLDERS)
