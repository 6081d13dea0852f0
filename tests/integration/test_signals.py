"""SIGTERM during Ray start-up, and a double Ctrl-C mid-run: exit 130 with a resume hint."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import small_scenario

pytestmark = pytest.mark.integration

FEDSIM = str(Path(sys.executable).with_name("fedsim"))


def start_run(tmp_path: Path, rounds: int) -> tuple[subprocess.Popen[str], Path]:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(small_scenario(rounds=rounds).to_toml())
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [FEDSIM, "run", str(scenario), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def descendants(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(proc.pid).children(recursive=True)
    return []


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"fedsim did not stop within {timeout} s of the signal: {err[-2000:]}")
    return proc.returncode, err


def test_sigterm_during_ray_start_up_stops_with_130_and_a_message(tmp_path: Path) -> None:
    proc, out = start_run(tmp_path, rounds=2)
    # Ray is starting once its GCS server runs (ray.init has not returned yet).
    started = wait_for(
        lambda: any(p.name() == "gcs_server" for p in descendants(proc)), timeout=240
    )
    assert started, "Ray never started"
    ray_procs = descendants(proc)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 130, err[-2000:]
    assert "start-up" in err and f"fedsim resume {out}" in err, err[-2000:]
    _, alive = psutil.wait_procs(ray_procs, timeout=30)
    assert not alive, f"Ray processes left running: {alive}"


def test_double_ctrl_c_still_prints_the_resume_hint(tmp_path: Path) -> None:
    proc, out = start_run(tmp_path, rounds=30)
    metrics = out / "metrics.jsonl"
    assert wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, 300)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert code == 130, err[-2000:]
    assert f"fedsim resume {out}" in err, err[-2000:]
