"""fedsim as a Flower App: `flwr run` on a local simulation SuperLink writes a fedsim run.

The SuperLink is started here (loopback, a free port, a private FLWR_HOME) rather than
lazily by `flwr run`, so that the test knows its process id and stops it, with every
process it started (flwr-simulation, Ray), in teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fedsim.config import Scenario
from fedsim.launch import run
from tests.integration.test_ray_local import is_loopback

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 420  # seconds for the whole `flwr run` (start-up, 2 rounds, shutdown)

# Flower's console scripts, run by this test's Python (the SuperLink starts
# `flower-superexec`, which starts `flwr-simulation`, by name from PATH): the runtime
# then imports this checkout's fedsim.
SCRIPTS = {
    "flwr": ("flwr.cli.app", "app"),
    "flower-superlink": ("flwr.superlink.cli", "flower_superlink"),
    "flower-superexec": ("flwr.supercore.cli", "flower_superexec"),
    "flwr-simulation": ("flwr.simulation.app", "flwr_simulation"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scripts(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, (module, attr) in SCRIPTS.items():
        path = bin_dir / name
        path.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n"
        )
        path.chmod(0o755)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _stop(procs: list[psutil.Process]) -> None:
    """Terminate these processes by pid, then kill those still alive."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def superlink(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A simulation SuperLink on 127.0.0.1 with a private Flower home; stopped after."""
    port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fedsim-test"\n\n'
        f'[superlink.fedsim-test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    bin_dir = tmp_path / "bin"
    _scripts(bin_dir)
    # Short path: Ray's unix sockets live under its temp dir (108-byte limit).
    ray_tmp = Path(tempfile.mkdtemp(prefix="fsray", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        FLWR_HOME=str(home),
        FLWR_DISABLE_UPDATE_CHECK="1",
        # fedsim runs from this environment, not from one Flower would build with uv.
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        # Ray as fedsim starts it: single-machine mode (every port on 127.0.0.1) and a
        # per-run token; Flower's ray.init inherits both through the environment.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_urlsafe(32),
        RAY_TMPDIR=str(ray_tmp),
    )
    log = tmp_path / "superlink.log"
    proc = subprocess.Popen(
        [
            str(bin_dir / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-file",
            str(log),
            "--disable-runtime-dependency-installation",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"flower-superlink exited: {_tail(log)}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"SuperLink not up in 60 s: {_tail(log)}"
            time.sleep(0.5)
        yield {"pid": proc.pid, "env": env, "bin": bin_dir, "log": log}
    finally:
        _stop(_tree(proc.pid))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def test_flwr_run_writes_a_run_directory_fedsim_audit_accepts(
    superlink: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    seen: set[tuple[str, str, int]] = set()
    done = threading.Event()

    def sample() -> None:  # every listening socket of the SuperLink's process tree
        while not done.is_set():
            for proc in _tree(superlink["pid"]):
                try:
                    for c in proc.net_connections(kind="inet"):
                        if c.status == psutil.CONN_LISTEN:
                            seen.add((proc.name(), c.laddr.ip, c.laddr.port))
                except psutil.Error:
                    continue
            time.sleep(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        res = subprocess.run(
            [
                str(superlink["bin"] / "flwr"),
                "run",
                str(ROOT),
                "--run-config",
                f'scenario="scenarios/quickstart.toml" rounds=2 out="{out}"',
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1 init-args-num-cpus=2",
                "--stream",
            ],
            env=superlink["env"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        deadline = time.monotonic() + 60  # --stream may return before the last write
        while not (out / "summary.json").exists() and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        done.set()
        sampler.join(timeout=5)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "summary.json").exists(), (
        res.stdout[-3000:] + res.stderr[-3000:] + _tail(superlink["log"])
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "quickstart"
    assert summary["rounds"] == 2
    assert summary["epsilon"]["max"] > 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2]
    per_round = Scenario.from_toml(ROOT / "scenarios/quickstart.toml").clients_per_round
    assert all(m["clients_trained"] == per_round for m in metrics)
    # The same scenario through `fedsim run`: the same seeded run, the same numbers.
    own = run(
        Scenario.from_toml(ROOT / "scenarios/quickstart.toml", ["rounds=2"]),
        tmp_path / "own",
        progress=False,
    )
    assert [m["accuracy"] for m in metrics] == [m["accuracy"] for m in own.metrics]
    assert summary["epsilon"] == own.summary["epsilon"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in own.run_dir.iterdir())
    assert "rounds = 2" in (out / "scenario.toml").read_text()

    audit = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "audit", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

    ray_sockets = [s for s in seen if s[0].startswith(("gcs_server", "raylet", "ray::"))]
    assert ray_sockets, f"no Ray process seen listening: {sorted(seen)}"
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"sockets listening beyond loopback under flwr run: {exposed}"
