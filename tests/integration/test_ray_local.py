"""A local run's Ray is private: loopback-only sockets, a per-run token, no leftovers."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

import fedsim.engine.simulation as simulation
from fedsim.launch import run
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration

JOIN = """
import ray
try:
    ray.init(address={address!r}, logging_level="error")
    print("JOINED", ray.get(ray.remote(lambda: 1).remote(), timeout=30))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc, "| cause:", type(exc.__cause__).__name__)
"""


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listening_sockets() -> set[tuple[str, str, int]]:
    """(process name, ip, port) of every listening socket of this process's tree."""
    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue  # exited meanwhile
    return found


def test_local_ray_is_loopback_only_token_protected_and_cleaned_up(
    tmp_path: Path, monkeypatch: Any
) -> None:
    seen: set[tuple[str, str, int]] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            seen.update(listening_sockets())

    probe: dict[str, Any] = {}
    server_loop = simulation._server_loop

    def loop_after_probe(grid: Any, sc: Any, state: Any) -> None:
        import ray

        # Ray is up: try to join it as another local process without the token.
        probe["session"] = Path(ray._private.worker._global_node.get_session_dir_path())
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        code = JOIN.format(address=ray.get_runtime_context().gcs_address)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
        )
        probe["join"] = out.stdout + out.stderr
        server_loop(grid, sc, state)

    monkeypatch.setattr(simulation, "_server_loop", loop_after_probe)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run(small_scenario(rounds=2), tmp_path / "run", progress=False)
    finally:
        done.set()
        sampler.join()
    assert result.summary["rounds"] == 2
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names)
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"Ray sockets listening beyond loopback: {exposed}"
    # A process without the run's token is refused by the GCS.
    assert "JOINED" not in probe["join"] and "REFUSED" in probe["join"], probe["join"]
    assert "Authentication" in probe["join"] or "auth" in probe["join"].lower(), probe["join"]
    # The run's own Ray session directory is gone; the token settings are undone.
    assert not probe["session"].exists()
    assert "RAY_AUTH_TOKEN" not in os.environ


def test_only_the_runs_own_session_dir_is_removed(tmp_path: Path) -> None:
    ray_temp = Path("/tmp/ray")
    ray_temp.mkdir(exist_ok=True)
    other = ray_temp / f"session_2000-01-01_00-00-00_000000_{os.getpid()}"
    other.mkdir()
    (other / "logs").mkdir()
    try:
        run(small_scenario(rounds=1), tmp_path / "run", progress=False)
        assert other.is_dir() and (other / "logs").is_dir()  # another session: untouched
    finally:
        import shutil

        shutil.rmtree(other, ignore_errors=True)
