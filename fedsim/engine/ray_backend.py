"""Ray for a fedsim run: start it private to this machine, or join a cluster; stop it.

A local run binds every Ray port to loopback and requires a fresh per-run token; its
own session directory is removed at the end. Flower's Ray backend config (workers as
actors, their resources) and the number of supernodes a round needs are decided here.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.config import Scenario
from fedsim.engine.grid import cohort_size
from fedsim.errors import FedsimError
from fedsim.registry import worker_sys_path


class SimulationError(FedsimError, RuntimeError):
    """The simulation could not start or finish (Ray unreachable, no clients left...)."""


class ClusterUnreachableError(SimulationError):
    """`backend.ray_address` names a Ray cluster that does not answer: nothing started."""

    bad_input = True


@dataclass
class LocalRay:
    """What fedsim set up to start a Ray of its own, undone by `stop_ray`.

    Attributes:
        session_dir: Ray's session directory of this run (None when fedsim joined a
            cluster: the cluster's sessions are not fedsim's to remove).
        saved_env: the environment variables fedsim set, with their previous values.
        cluster_mode: `ray._private.ray_constants.ENABLE_RAY_CLUSTER` before the run.
    """

    session_dir: Path | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)
    cluster_mode: bool | None = None


# Ray 2.55 on Linux takes the machine's external address as the node IP, and its
# gRPC servers (GCS, raylet, core workers) then listen on every interface. In Ray's
# single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's default on macOS and
# Windows) the node IP is 127.0.0.1 and every server binds to loopback only. Ray
# reads the variable once, into ray_constants.ENABLE_RAY_CLUSTER, when it is imported.
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's token authentication (RAY_AUTH_MODE=token): every gRPC call to the GCS,
# raylets and workers must carry the token, which Ray's processes inherit from the
# driver's environment. A fresh random token per run: no other process joins.
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def init_ray(scenario: Scenario, local: LocalRay, stop: threading.Event) -> None:
    """Start (or join) Ray as Flower's backend would, so fedsim owns the signal handling.

    A local run binds every Ray port to 127.0.0.1 and requires a per-run token;
    what that changed is recorded in `local` for `stop_ray`, even if ray.init fails.
    A SIGTERM during ray.init sets `stop` (the run ends as interrupted).
    Flower's Ray backend skips its own ray.init() when Ray is already up; the
    workers get the driver's sys.path as Flower gives it to them.
    """
    import ray

    init_args = dict(backend_config(scenario)["init_args"])
    # '' (the working directory) made absolute, and the working directory added: user
    # components given by import path are found in the workers as in the driver.
    pythonpath = os.pathsep.join(worker_sys_path())
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    if ray.is_initialized():
        ray.shutdown()
    if not scenario.backend.ray_address:
        _loopback_and_token(local)
    try:
        context = ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
    except SystemExit as exc:
        # Ray's start-up SIGTERM handler is `sys.exit(signum)`.
        if exc.code != signal.SIGTERM:
            raise
        stop.set()
        return
    if not scenario.backend.ray_address:
        local.session_dir = Path(context.address_info["session_dir"])


def _loopback_and_token(local: LocalRay) -> None:
    """Ray's settings for a private local run; what they replaced is kept in `local`."""
    import secrets

    import ray._private.ray_constants as ray_constants

    new = {
        _SINGLE_MACHINE_ENV: "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_urlsafe(32),
        "RAY_AUTH_TOKEN_PATH": None,
    }
    for key, value in new.items():
        local.saved_env[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    local.cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray may have been imported before
    _reload_ray_auth_config()


def _reload_ray_auth_config() -> None:
    """Make this process's Ray re-read RAY_AUTH_* (it caches them at import)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    AuthenticationTokenLoader.instance().reset_cache()
    Config.initialize("")


def stop_ray(local: LocalRay) -> None:
    """Shut Ray down, remove this run's own session directory, restore the settings."""
    import ray

    ray.shutdown()  # Flower shuts Ray down itself unless it failed early; twice is fine
    if local.session_dir is not None:
        _remove_session_dir(local.session_dir)
    for key, value in local.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if local.cluster_mode is not None:
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = local.cluster_mode
    if local.saved_env:
        _reload_ray_auth_config()


def _remove_session_dir(session: Path) -> None:
    """Delete the session directory this run's Ray created, and only that one.

    Ray leaves one `session_*` directory per ray.init in its temp folder (logs,
    sockets, runtime resources). Its processes may still be exiting, so removal is
    retried briefly; `session_latest` is removed only if it points here.
    """
    import shutil

    if not session.name.startswith("session_") or not session.is_dir():
        return
    for attempt in range(10):
        shutil.rmtree(session, ignore_errors=True)
        if not session.exists():
            break
        time.sleep(0.2 * (attempt + 1))
    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)) in (session, Path(session.name)):
        latest.unlink(missing_ok=True)
    if session.exists():
        logging.getLogger("fedsim").warning("could not remove Ray's session dir %s", session)


def num_supernodes(scenario: Scenario) -> int:
    """Supernodes needed so that every cohort of a round has its own node.

    Flower's engine hands out one message per node per 0.1 s tick, so two cohorts
    on one node would wait for each other.
    """
    b = scenario.backend
    m = scenario.clients_per_round
    needed = math.ceil(m / cohort_size(m, b.workers, b.clients_per_message))
    frac = scenario.evaluation.federated_fraction
    if frac > 0:
        e = max(1, int(scenario.population * frac))
        needed = max(needed, math.ceil(e / cohort_size(e, b.workers, b.clients_per_message)))
    return max(1, needed)


def backend_config(scenario: Scenario) -> dict[str, Any]:
    """Flower's Ray backend config: workers as actors, Ray kept local unless asked."""
    b = scenario.backend
    resources = {
        "num_cpus": b.cpus_per_worker,
        "num_gpus": b.gpus_per_worker,
        # Flower passes these to the actors' .options(): a worker process that dies
        # (OOM kill, segfault) is restarted for the next round instead of failing
        # every later cohort sent to it.
        "max_restarts": 5,
    }
    if b.ray_address:
        init_args: dict[str, Any] = {"address": b.ray_address}
    else:
        # "local" stops a plain ray.init() from joining a cluster recorded by an
        # earlier `ray start` (it hangs silently if that cluster is gone).
        init_args = {
            "address": "local",
            "num_cpus": max(1, math.ceil(b.workers * b.cpus_per_worker)),
            "num_gpus": math.ceil(b.workers * b.gpus_per_worker),
            # Loopback only (with the single-machine mode set by init_ray: Ray maps
            # 127.0.0.1 to the external address otherwise).
            "_node_ip_address": "127.0.0.1",
        }
    init_args.update({"include_dashboard": False, "logging_level": "error", "log_to_driver": False})
    return {"client_resources": resources, "init_args": init_args}


def check_ray_address(scenario: Scenario) -> None:
    """Refuse a `backend.ray_address` that does not answer, before anything starts."""
    address = scenario.backend.ray_address
    if not address or address in ("local", "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection(
            (host or "127.0.0.1", int(port)), timeout=scenario.backend.connect_timeout
        ):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at backend.ray_address = {address!r} "
            f"within {scenario.backend.connect_timeout:.0f} s ({exc}); start it with "
            "`ray start --head --port=PORT` or remove ray_address to run locally"
        ) from exc
