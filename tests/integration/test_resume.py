"""Kill a real run (SIGKILL) mid-way, resume it, and get the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from fedsim.config import Scenario
from fedsim.launch import resume, run
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration

ROUNDS = 6


def scenario() -> Scenario:
    return small_scenario(
        rounds=ROUNDS,
        train__epochs=3,
        evaluation__federated_fraction=0.5,
        strategy__name="fedadam",
        strategy__options={"eta": 0.05},
    )


def start(tmp_path: Path, out: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / "scenario.toml"
    path.write_text(scenario().to_toml())
    return subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "--out", str(out), "--quiet"],
        start_new_session=True,  # its own process group: Ray's processes are its children
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_rounds(out: Path, n: int, proc: subprocess.Popen[bytes], limit: float = 240) -> int:
    deadline = time.monotonic() + limit
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists():
            done = len(metrics.read_text().splitlines())
            if done >= n:
                return done
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("the run did not reach the round in time")


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    gone_by = time.monotonic() + 30
    while time.monotonic() < gone_by and any(psutil.pid_exists(p) for p in family[1:]):
        time.sleep(0.2)


def strip_timing(path: Path) -> list[str]:
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("seconds")  # wall time, and which Ray node ran a cohort: not results
        row.pop("ray_nodes")
    return [json.dumps(r) for r in rows]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    reference = run(scenario(), tmp_path / "ref", progress=False)

    out = tmp_path / "killed"
    proc = start(tmp_path, out)
    done = wait_for_rounds(out, 2, proc)
    kill_tree(proc)
    assert done < ROUNDS, "the run must be killed mid-way"
    assert not (out / "summary.json").exists()

    resumed = resume(out, progress=False)
    # killed after round 2's metrics line; its checkpoint may or may not be on disk yet
    assert resumed.summary["resumed_from_round"] >= 1
    for key, tensor in reference.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[key]), key
    saved = torch.load(out / "model.pt", weights_only=True)
    ref_saved = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], ref_saved[k]) for k in saved)
    ledger_ref = (tmp_path / "ref" / "privacy_ledger.jsonl").read_bytes()
    assert (out / "privacy_ledger.jsonl").read_bytes() == ledger_ref  # byte for byte
    assert strip_timing(out / "metrics.jsonl") == strip_timing(tmp_path / "ref/metrics.jsonl")


def test_sigterm_stops_within_seconds_and_leaves_a_resumable_run(tmp_path: Path) -> None:
    out = tmp_path / "term"
    proc = start(tmp_path, out)
    wait_for_rounds(out, 1, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stopped_in = time.monotonic() - t0
    err = proc.stderr.read().decode()
    assert code == 130, err
    assert stopped_in < 30
    assert "fedsim resume" in err
    # the Ray processes this run started are gone (workers exit once the raylet stops)
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.5)
    assert not alive
    result = resume(out, progress=False)
    assert result.summary["rounds"] == ROUNDS


def test_secure_rng_resume_keeps_the_killed_attempts_releases_charged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    from fedsim.cli.commands import main
    from fedsim.privacy import read_ledger

    sc = small_scenario(rounds=2, dp__secure_rng=True)
    clean = run(sc, tmp_path / "clean", progress=False)
    # The state a kill leaves between round 2's ledger lines and its checkpoint: the
    # ledger and metrics hold round 2, the latest checkpoint is round 1's.
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "clean", out)
    for name in ("summary.json", "model.pt", "checkpoints/round_00002.pt"):
        (out / name).unlink()
    pointer = {"round": 1, "file": "round_00001.pt"}
    (out / "checkpoints" / "latest.json").write_text(json.dumps(pointer) + "\n")

    resumed = resume(out, progress=False)
    statuses = [(r["round"], r["status"]) for r in read_ledger(out / "privacy_ledger.jsonl")]
    m = sc.clients_per_round
    assert statuses == [(1, "trained")] * m + [(2, "discarded")] * m + [(2, "trained")] * m
    # both attempts of round 2 are composed: more privacy spent than the clean run's
    assert resumed.summary["epsilon"]["max"] > clean.summary["epsilon"]["max"]
    capsys.readouterr()
    assert main(["audit", str(out)]) == 0
    assert "'discarded'" in capsys.readouterr().out
