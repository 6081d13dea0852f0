"""A real two-node Ray cluster on loopback: fedsim connects to it instead of starting Ray."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fedsim.launch import run
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    if not Path(RAY).exists() and shutil.which("ray") is None:
        pytest.skip("the ray CLI is not installed")
    port = free_port()
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    # Own, short temp dir (Ray's socket paths must stay under ~107 characters): the
    # cluster's address file and processes are this test's alone.
    temp = Path(tempfile.mkdtemp(prefix="fsray", dir="/tmp"))
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
        subprocess.run(
            [RAY, "start", f"--address={address}", *common],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
        yield address
    finally:
        # Stop this cluster's processes only (`ray stop` would stop every Ray on the
        # machine): they all carry the cluster's temp dir on their command line.
        stop_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_processes_under(temp: Path) -> None:
    marker = str(temp)
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def cluster_nodes(address: str) -> set[str]:
    code = (
        f"import ray, json; ray.init(address={address!r}, logging_level='error');"
        "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    import json

    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_two_rounds_run_on_the_cluster(cluster: str, tmp_path: Path) -> None:
    nodes = cluster_nodes(cluster)
    assert len(nodes) == 2
    # The sequential engine sends two cohorts (K=2) to the two workers; the vectorised
    # one would send the whole 4-client round as one cohort, to one node.
    sc = small_scenario(
        rounds=2, backend__ray_address=cluster, backend__workers=2, backend__engine="sequential"
    )
    result = run(sc, tmp_path / "run", progress=False)
    used = {n for m in result.metrics for n in m["ray_nodes"]}
    assert used and used <= nodes  # the cohorts ran on the cluster's nodes
    assert len(used) == 2  # one worker per 1-CPU node: both nodes did work
    assert result.summary["rounds"] == 2 and result.summary["accuracy"] is not None
