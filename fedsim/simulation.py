"""`fedsim.run(scenario)`: a Flower ServerApp + ClientApp run on Flower's Ray engine.

The ServerApp drives Flower's own strategy round by round (the loop of
`Strategy.start`, with fedsim's bookkeeping between the steps) over a
`VirtualClientGrid`; the ClientApp is the cohort trainer in fedsim.clients.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

import fedsim
from fedsim.checkpoint import (
    Checkpoint,
    plan_resume,
    restore_strategy_state,
    save_checkpoint,
    scenario_hash,
    strategy_state,
)
from fedsim.clients.dp import plan_participation
from fedsim.clients.engine import EngineChoice, choose_engine
from fedsim.clients.evaluate import evaluate
from fedsim.clients.trainer import build_global_model, choose_grad_sample_mode
from fedsim.clients.worker import load_scenario_data
from fedsim.config import Scenario, ScenarioError
from fedsim.data.cache import FOLDER as DATA_CACHE_FOLDER
from fedsim.data.cache import run_cache
from fedsim.failures import FailureWatch
from fedsim.grid import RoundReport, RunStopped, VirtualClientGrid, cohort_size
from fedsim.privacy import PrivacyEvent, PrivacyLedger, epsilon
from fedsim.progress import RunProgress
from fedsim.registry import worker_sys_path
from fedsim.rundir import (
    JsonLines,
    RunDir,
    RunDirCorruptError,
    RunDirError,
    read_jsonl,
    storage_errors,
)
from fedsim.seeding import derive_seed, numpy_rng
from fedsim.shards import build_shards
from fedsim.strategies import build_strategy
from fedsim.strategies.dp_fedavg import DPFedAvg
from fedsim.strategies.factory import user_noise_multiplier
from fedsim.tracking import open_tracker


@dataclass
class RunResult:
    """What `fedsim.run` returns: where the files are, and the main numbers."""

    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    #: resume() of a run that had finished: nothing was run or written.
    already_complete: bool = False


class SimulationError(RuntimeError):
    """The simulation could not start or finish (Ray unreachable, no clients left...)."""


def run(
    scenario: Scenario,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run a scenario end to end and write its run directory.

    Args:
        scenario: a validated Scenario (see `Scenario.from_toml`).
        out: run directory; default `runs/<scenario name>`.
        overwrite: replace an existing fedsim run directory (only fedsim's files in it).
        progress: show a live progress display on the terminal.

    Returns:
        RunResult with the run directory, summary, per-round metrics and final weights.

    Raises:
        RunDirError: the run directory exists, is not a fedsim run (with overwrite), is
            in use by another process, is not writable, or the disk filled up
            (StorageError: the run is resumable).
        SimulationError: the Ray cluster named in the scenario cannot be reached.
        RunInterrupted: SIGINT/SIGTERM stopped the run (it can be resumed).
    """
    rundir = RunDir(out if out is not None else Path("runs") / scenario.name)
    _check_ray_address(scenario)
    try:
        with storage_errors(rundir.path):
            rundir.create(overwrite=overwrite)  # takes the run's lock
            rundir.write_text(rundir.scenario, scenario.to_toml())
            state = _ServerState(scenario, rundir, RunProgress(scenario, enabled=progress))
            return _execute(scenario, state)
    finally:
        rundir.unlock()


def resume(run_dir: str | Path, *, progress: bool = True) -> RunResult:
    """Continue a killed or interrupted run from its last checkpoint.

    The scenario is the run directory's own `scenario.toml`. Checkpoint, metrics and
    ledger are all checked before anything is changed; then the lines written after
    the checkpoint are dropped (their rounds run again), except ledger lines of a
    `dp.secure_rng` run, which stay charged with status "discarded" (the re-run's
    fresh noise makes new releases). A finished run is left as it is.

    Raises:
        RunDirError: no run directory / scenario there, in use by another process,
            corrupt files, a full or read-only disk.
        CheckpointError: a corrupt checkpoint, one from another scenario, or files that
            do not match it.
    """
    rundir = RunDir(run_dir)
    if not rundir.scenario.is_file():
        raise RunDirError(f"{rundir.path} holds no run to resume (no scenario.toml)")
    scenario = Scenario.from_toml(rundir.scenario)
    finished = rundir.complete_summary()
    if finished is not None:  # nothing to do: no Ray, no lock, no write
        return _finished(rundir, finished)
    # Continuing is starting: the checks of this machine (data files, memory) run too.
    scenario = Scenario.from_toml(rundir.scenario, before_run=True)
    _check_ray_address(scenario)
    try:
        with storage_errors(rundir.path):
            rundir.lock()
            plan = plan_resume(
                rundir.metrics,
                rundir.ledger,
                rundir.checkpoints,
                expected_hash=scenario_hash(scenario.fingerprint()),
                fresh_noise=scenario.dp.secure_rng and scenario.dp.mode != "off",
            )
            # Everything checked: only now is the directory changed.
            rundir.write_bytes(rundir.metrics, plan.metrics)
            if plan.ledger is not None:
                rundir.write_bytes(rundir.ledger, plan.ledger)
            if plan.discarded and progress:
                from rich.console import Console

                Console(stderr=True).print(
                    f"resume: {plan.discarded} ledger line(s) of the killed attempt kept as "
                    "'discarded' (fresh noise: their releases stay charged)",
                    markup=False,
                    highlight=False,
                )
            state = _ServerState(
                scenario, rundir, RunProgress(scenario, enabled=progress), resume=plan.checkpoint
            )
            return _execute(scenario, state)
    finally:
        rundir.unlock()


def _finished(rundir: RunDir, summary: dict[str, Any]) -> RunResult:
    """The result of a run that already completed, read without changing a file."""
    return RunResult(
        rundir.path,
        summary,
        read_jsonl(rundir.metrics) if rundir.metrics.exists() else [],
        torch.load(rundir.model, weights_only=True),
        already_complete=True,
    )


def _execute(scenario: Scenario, state: _ServerState) -> RunResult:
    rundir = state.rundir
    started = time.perf_counter()
    _STOP.clear()
    try:
        # The data set's arrays: written once into the run directory, mapped by every process.
        with run_cache(rundir.path / DATA_CACHE_FOLDER):
            _simulate(scenario, state)
    finally:
        state.close()
    wall = time.perf_counter() - started
    if state.error is not None:
        raise state.error
    if state.interrupted:
        raise RunInterrupted(
            f"{state.stopped}; the run directory {rundir.path} is resumable: "
            f"fedsim resume {rundir.path}"
        )
    summary = state.summary(wall)
    rundir.save_model(state.final_state)
    from fedsim.report.figures import plot_run

    plot_run(state.metrics, rundir.plots, scenario.model_dump(mode="json"))
    state.tracker.on_end(summary)
    # Last: summary.json is the commit marker of a finished run (`fedsim results`,
    # resume's "already complete"); a crash before it leaves a resumable run.
    rundir.write_json(rundir.summary, summary)
    return RunResult(rundir.path, summary, state.metrics, state.final_state)


class RunInterrupted(RuntimeError):
    """The run was stopped by a signal; its directory can be resumed."""


# Set by SIGINT/SIGTERM; the server loop stops at the next round boundary or poll.
_STOP = threading.Event()


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT/SIGTERM set the stop flag; a second one stops without waiting.

    While Flower's engine runs, a second signal ends the in-flight cohorts (their
    round is dropped anyway) instead of raising: an exception there would leave
    Flower's worker threads blocked on a Ray that was shut down under them, and the
    process would never exit. Elsewhere (start-up, shutdown) it raises
    KeyboardInterrupt. Returns the handlers replaced (for `_restore_signal_handlers`);
    none outside the main thread, where Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        if not _STOP.is_set():
            _STOP.set()
        elif _IN_FLOWER.is_set():
            _SECOND_SIGNAL.set()
            _kill_local_workers()
        else:
            raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


# Set while Flower's run_simulation runs in the main thread (see the handler).
_IN_FLOWER = threading.Event()
_SECOND_SIGNAL = threading.Event()


def _kill_local_workers() -> None:
    """Kill this process's own Ray worker actors (ray::ClientAppActor), so that the
    cohorts they run fail now. Workers on other machines of a cluster are left alone."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
            if cmd and cmd[0].startswith("ray::ClientAppActor"):
                proc.kill()
        except psutil.Error:
            continue  # gone already


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


# --------------------------------------------------------------------------- server


class _ServerState:
    """Everything the ServerApp thread writes, readable after the run."""

    def __init__(
        self,
        scenario: Scenario,
        rundir: RunDir,
        progress: RunProgress,
        resume: Checkpoint | None = None,
    ) -> None:
        self.scenario = scenario
        self.rundir = rundir
        self.progress = progress
        self.tracker = open_tracker(scenario, rundir.path, progress.phase)
        self.resume_from = resume
        self.ledger: PrivacyLedger | None = None
        self.ledger_lines = 0
        try:
            self._load_files()
        except ValueError as exc:  # a corrupt line: bad input (exit 2), not a failed run
            raise RunDirCorruptError(f"cannot continue the run in {rundir.path}: {exc}") from exc
        self.interrupted = False
        self.grad_sample_mode: str | None = None
        self.engine: EngineChoice | None = None
        self.final_state: dict[str, torch.Tensor] = {}
        self.error: BaseException | None = None
        self.mismatches = 0
        self.stopped: str | None = None
        self._budget_cache: dict[int, tuple[int, bool]] = {}
        self.user_participations: dict[int, int] = {}
        if self.ledger is not None:
            for event in self.ledger.user_events:
                for c in event.get("clients", []):
                    self.user_participations[c] = self.user_participations.get(c, 0) + 1

    def _load_files(self) -> None:
        """Read back the metrics and ledger lines a resumed run already has."""
        rundir, dp = self.rundir, self.scenario.dp
        self.metrics: list[dict[str, Any]] = (
            read_jsonl(rundir.metrics) if rundir.metrics.exists() else []
        )
        self.metrics_file = JsonLines(rundir.metrics)
        if dp.mode in ("sample", "user"):
            if rundir.ledger.exists() and rundir.ledger.stat().st_size > 0:
                self.ledger = PrivacyLedger.load(
                    rundir.ledger, delta=dp.delta, accountant=dp.accountant
                )
                self.ledger_lines = len(read_jsonl(rundir.ledger))
            else:
                self.ledger = PrivacyLedger(rundir.ledger, delta=dp.delta, accountant=dp.accountant)

    def close(self) -> None:
        self.metrics_file.close()
        if self.ledger is not None:
            self.ledger.close()
        self.progress.stop()

    def summary(self, wall: float) -> dict[str, Any]:
        sc = self.scenario
        evaluated = [m for m in self.metrics if m.get("accuracy") is not None]
        last = evaluated[-1] if evaluated else {}
        eps = _epsilon_summary(self, sc)
        return {
            "scenario": sc.name,
            "rounds": len(self.metrics),
            "accuracy": last.get("accuracy"),
            "loss": last.get("loss"),
            "epsilon": eps,
            "delta": sc.dp.delta if sc.dp.mode != "off" else None,
            "dp_mode": sc.dp.mode,
            "accountant": sc.dp.accountant if sc.dp.mode != "off" else None,
            "grad_sample_mode": self.grad_sample_mode,
            **(self.engine.summary() if self.engine else EngineChoice.unknown()),
            "noise_rng": ("os-entropy" if sc.dp.secure_rng else "seeded")
            if sc.dp.mode != "off"
            else None,
            # With secure_rng batch masks and Poisson cohorts are secret as well.
            "sampling_rng": ("os-entropy" if sc.dp.secure_rng else "seeded")
            if sc.dp.mode != "off"
            else None,
            "clients_trained": sum(m["clients_trained"] for m in self.metrics),
            "clients_failed": sum(m["clients_failed"] for m in self.metrics),
            "ledger_mismatches": self.mismatches,
            "privacy_level": {"sample": "example", "user": "user"}.get(sc.dp.mode),
            "max_epsilon": sc.dp.max_epsilon if sc.dp.mode != "off" else None,
            "stopped_early": self.stopped,
            "resumed_from_round": self.resume_from.round if self.resume_from else None,
            "population": sc.population,
            "clients_per_round": sc.clients_per_round,
            "wall_seconds": round(wall, 3),
            "versions": versions(),
        }


def _simulate(scenario: Scenario, state: _ServerState) -> None:
    """Run the ServerApp and ClientApp on Ray; signals stop it cleanly at any point.

    The handlers go in before anything slow (imports, Ray start-up), so a SIGINT or
    SIGTERM during start-up stops the run with a message instead of killing it; a
    second signal (or one while Ray shuts down) still ends as an interrupted run.
    """
    _SECOND_SIGNAL.clear()
    previous = _install_signal_handlers()
    server_threads: list[threading.Thread] = []
    try:
        _run_on_ray(scenario, state, server_threads)
    except KeyboardInterrupt:  # a second signal: stop waiting for the clean stop
        _STOP.set()
        for thread in server_threads:  # it sees _STOP at its next poll
            thread.join(timeout=10)
        _mark_interrupted(state, "stopped by a second signal")
    finally:
        _restore_signal_handlers(previous)


def _mark_interrupted(state: _ServerState, why: str) -> None:
    state.interrupted = True
    if state.stopped is None:
        state.stopped = why


def _run_on_ray(
    scenario: Scenario, state: _ServerState, server_threads: list[threading.Thread]
) -> None:
    from flwr.simulation import run_simulation

    from fedsim.clients.app import app as client_app

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        server_threads.append(threading.current_thread())
        try:
            _server_loop(grid, scenario, state)
        except RunStopped:
            # A signal during a round: that round is dropped; the last checkpoint
            # (and the ledger lines up to it) stand.
            state.stopped = "interrupted by a signal during a round"
            state.interrupted = True
        except BaseException as exc:  # surfaced to the caller after Ray shuts down
            state.error = exc
            raise

    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    # fedsim shows its own progress and records failures itself; Flower's warnings
    # (deprecations of its Python API, "federated evaluation skipped") are noise here.
    flwr_logger.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    session = _LocalRay()
    try:
        state.progress.phase("starting Ray")
        _init_ray(scenario, session)
        # ray.init installs its own SIGTERM handler (sys.exit); ours replaces it so
        # a signal stops the run cleanly instead.
        _install_signal_handlers()
        if _STOP.is_set():
            first = state.resume_from.round + 1 if state.resume_from else 1
            _mark_interrupted(state, f"interrupted during start-up, before round {first}")
            return
        state.progress.phase("starting the Flower simulation engine")
        _IN_FLOWER.set()
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes(scenario),
                backend_name="ray",
                backend_config=backend_config(scenario),
            )
        finally:
            _IN_FLOWER.clear()
        if _SECOND_SIGNAL.is_set():
            _mark_interrupted(state, "stopped by a second signal (in-flight cohorts dropped)")
    except Exception as exc:
        if state.error is None:
            state.error = exc
    finally:
        flwr_logger.setLevel(old_level)
        _stop_ray(session)


@dataclass
class _LocalRay:
    """What fedsim set up to start a Ray of its own, undone by `_stop_ray`.

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


def _init_ray(scenario: Scenario, local: _LocalRay) -> None:
    """Start (or join) Ray as Flower's backend would, so fedsim owns the signal handling.

    A local run binds every Ray port to 127.0.0.1 and requires a per-run token;
    what that changed is recorded in `local` for `_stop_ray`, even if ray.init fails.
    A SIGTERM during ray.init sets the stop flag (the run ends as interrupted).
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
        _STOP.set()
        return
    if not scenario.backend.ray_address:
        local.session_dir = Path(context.address_info["session_dir"])


def _loopback_and_token(local: _LocalRay) -> None:
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


def _stop_ray(local: _LocalRay) -> None:
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
            # Loopback only (with the single-machine mode set by _init_ray: Ray maps
            # 127.0.0.1 to the external address otherwise).
            "_node_ip_address": "127.0.0.1",
        }
    init_args.update({"include_dashboard": False, "logging_level": "error", "log_to_driver": False})
    return {"client_resources": resources, "init_args": init_args}


def _check_ray_address(scenario: Scenario) -> None:
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
        raise SimulationError(
            f"cannot reach the Ray cluster at backend.ray_address = {address!r} "
            f"within {scenario.backend.connect_timeout:.0f} s ({exc}); start it with "
            "`ray start --head --port=PORT` or remove ray_address to run locally"
        ) from exc


def _server_loop(grid: Grid, sc: Scenario, state: _ServerState) -> None:
    state.progress.phase(f"loading data ({sc.data.name})")
    bundle = load_scenario_data(sc)
    state.progress.phase(f"building shards ({sc.population} clients)")
    shards = build_shards(sc, bundle)
    sizes = shards.sizes()
    strategy = build_strategy(sc)
    model = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    # The same rules the workers apply to the same model: recorded in the summary.
    state.engine = choose_engine(sc, model, bundle.train)
    if sc.dp.mode == "sample":
        state.grad_sample_mode = (
            "vectorised"
            if state.engine.engine == "vectorised"
            else choose_grad_sample_mode(model, sc.dp.grad_sample_mode)
        )
    arrays = ArrayRecord(model.state_dict())
    first = 1
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    if state.resume_from is not None:
        arrays = ArrayRecord({k: v.clone() for k, v in state.resume_from.weights.items()})
        restore_strategy_state(strategy, state.resume_from.strategy_state)
        first = state.resume_from.round + 1
    vgrid = VirtualClientGrid(
        grid,
        population=sc.population,
        workers=sc.backend.workers,
        clients_per_message=sc.backend.clients_per_message,
        scenario_json=sc.fingerprint(),
        chunk=state.engine.vector_clients or 1,
    )
    test_idx = _test_indices(sc, len(bundle.test))
    vgrid.available = _budget_filter(sc, state, sizes)
    vgrid.stop_event = _STOP
    failures = FailureWatch(sc, state.rundir.path)
    state.progress.start(sc.rounds, done=first - 1, previous=state.metrics[: first - 1])
    for rnd in range(first, sc.rounds + 1):
        t0 = time.perf_counter()
        if _STOP.is_set():
            state.stopped = f"interrupted by a signal before round {rnd}"
            state.interrupted = True
            break
        stop = _budget_stop(sc, state, strategy, vgrid)
        if stop:
            state.stopped = stop
            state.progress.note(stop)
            break
        vgrid.current_round = rnd
        # Flower samples with the module-level `random`; seeding it per round makes
        # the cohort a function of (seed, round) alone.
        random.seed(derive_seed(sc.seed, "sample-clients", rnd))
        messages = strategy.configure_train(rnd, arrays, ConfigRecord(), vgrid)
        replies = vgrid.send_and_receive(messages, timeout=sc.backend.round_timeout)
        report = vgrid.reports.pop()
        _record_privacy(state, report, sizes)
        failures.observe(report)  # real client errors stop the run (fedsim.failures)
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = new_arrays
        if isinstance(strategy, DPFedAvg) and state.ledger is not None:
            rel = strategy.releases[-1]
            state.ledger.record_user(
                round=rnd,
                noise_multiplier=rel.noise_multiplier,
                sample_rate=rel.sample_rate,
                clip_norm=rel.clip_norm,
                sampling=rel.sampling,
                clients=rel.clients,
                **rel.ledger_fields(),
            )
            state.ledger_lines += 1
            for c in rel.clients:
                state.user_participations[c] = state.user_participations.get(c, 0) + 1
        row: dict[str, Any] = {"round": rnd, "accuracy": None, "loss": None}
        row["train_loss"] = _finite(train_metrics, "train_loss")
        row.update(_epsilon_row(state, sc))
        row.update(_client_counts(report))
        row["ray_nodes"] = sorted(set(report.nodes))
        last = rnd == sc.rounds
        every = sc.evaluation.every
        if sc.evaluation.federated_fraction > 0 and ((every and rnd % every == 0) or last):
            random.seed(derive_seed(sc.seed, "sample-evaluators", rnd))
            ev_msgs = strategy.configure_evaluate(rnd, arrays, ConfigRecord(), vgrid)
            ev_replies = vgrid.send_and_receive(ev_msgs, timeout=sc.backend.round_timeout)
            ev_report = vgrid.reports.pop()
            row["cohorts_resent"] += ev_report.cohorts_resent
            row["worker_restarts"] += ev_report.worker_restarts
            fed = strategy.aggregate_evaluate(rnd, ev_replies)
            row["fed_accuracy"] = _finite(fed, "accuracy")
            row["fed_loss"] = _finite(fed, "loss")
            row.update(_fairness(ev_report))
        if (every and rnd % every == 0) or last:
            model.load_state_dict(arrays.to_torch_state_dict())
            res = evaluate(model, bundle.test, test_idx, batch_size=sc.evaluation.batch_size)
            row["accuracy"], row["loss"] = res.accuracy, res.loss
        row["seconds"] = round(time.perf_counter() - t0, 4)
        state.metrics.append(row)
        state.metrics_file.write(row)
        state.tracker.on_round(row)
        state.metrics_file.flush()
        if state.ledger is not None:
            state.ledger.flush()
        every_ckpt = sc.checkpoint.every
        if every_ckpt and (rnd % every_ckpt == 0 or rnd == sc.rounds):
            save_checkpoint(
                state.rundir.checkpoints,
                Checkpoint(
                    round=rnd,
                    weights={k: v.clone() for k, v in arrays.to_torch_state_dict().items()},
                    strategy_state=strategy_state(strategy),
                    ledger_lines=state.ledger_lines,
                    metrics_lines=len(state.metrics),
                    scenario_hash=scenario_hash(sc.fingerprint()),
                ),
            )
        state.progress.update(row)
    state.final_state = {k: v.clone() for k, v in arrays.to_torch_state_dict().items()}
    if sc.audit.canaries and not state.interrupted:
        model.load_state_dict(state.final_state)
        _write_canary_audit(sc, state, model, bundle)
    if isinstance(strategy, DPFedAvg) and strategy.canaries and not state.interrupted:
        _write_one_shot_audit(sc, state, strategy, initial, state.final_state)


def _write_one_shot_audit(
    sc: Scenario, state: _ServerState, strategy: DPFedAvg, initial: Any, final: Any
) -> None:
    """Andrew et al. (2023): cosines of the final model delta with the inserted vs the
    held-out canary directions, turned into an epsilon *estimate* (not a bound)."""
    from fedsim.empirical.one_shot import cosines, epsilon_estimate

    keys = list(initial)
    delta = np.concatenate([(final[k] - initial[k]).numpy().ravel() for k in keys])
    dirs = strategy.canary_directions({k: initial[k].numpy() for k in keys})
    cos = cosines(delta.astype(np.float64), dirs)
    k = strategy.canaries
    estimate = epsilon_estimate(cos[:k], cos[k:], delta=sc.dp.delta)
    eps = _epsilon_summary(state, sc)
    claimed = eps["max"] if eps else None
    state.rundir.write_json(
        state.rundir.path / "empirical_audit.json",
        {
            "method": "one_shot",
            "epsilon_estimate": estimate,
            "delta": sc.dp.delta,
            "canaries": k,
            "held_out": k,
            "canary_participations_mean": float(strategy.canary_participations.mean()),
            "inserted_cosine_mean": float(cos[:k].mean()),
            "heldout_cosine_mean": float(cos[k:].mean()),
            "claimed_epsilon": claimed,
            "note": "an estimate (Gaussian fit of canary cosines), not a certified bound",
        },
    )


def _write_canary_audit(sc: Scenario, state: _ServerState, model: Any, bundle: Any) -> None:
    """Score the canaries with the final model and write empirical_audit.json.

    The guesses use a few (k+, k-) choices fixed in advance; best_lower_bound pays
    for trying several with a union bound, so the stated confidence holds.
    """
    from fedsim.canaries import canary_plan, canary_scores
    from fedsim.empirical.one_run import best_lower_bound

    m = sc.audit.canaries
    offset = len(bundle.train.base)
    plan = canary_plan(m, sc.population, offset, sc.seed)
    scores = canary_scores(model, bundle.train, offset)
    ks = sorted({max(1, m // d) for d in (20, 10, 4)})
    # The bound is tested against the claim's (eps, delta), so it is computed at that
    # delta (Steinke et al. 2023, approximate DP); with DP off nothing is claimed.
    result = best_lower_bound(
        scores,
        plan.included,
        confidence=sc.audit.confidence,
        k_values=[(k, k) for k in ks],
        delta=sc.dp.delta if sc.dp.mode != "off" else 0.0,
    )
    eps = _epsilon_summary(state, sc)
    result["claimed_epsilon"] = eps["max"] if eps else None
    result["claimed_delta"] = sc.dp.delta if sc.dp.mode != "off" else None
    result["included"] = int(plan.included.sum())
    claimed = result["claimed_epsilon"]
    result["violation"] = bool(claimed is not None and result["epsilon_lower_bound"] > claimed)
    state.rundir.write_json(state.rundir.path / "empirical_audit.json", result)


def _planned_event(sc: Scenario, shard_size: int) -> PrivacyEvent:
    plan = plan_participation(sc, shard_size)
    return PrivacyEvent(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        max_grad_norm=plan.max_grad_norm,
        delta=plan.delta,
    )


def _budget_filter(sc: Scenario, state: _ServerState, sizes: np.ndarray) -> Any:
    """Clients that may still be sampled: their next participation stays in budget.

    Sample level: projected epsilon after one more planned participation. User level
    with fixed-size sampling (accounted without amplification, per client): one more
    release the client takes part in. With Poisson sampling every release covers
    every client, so `_budget_stop` checks the population instead.
    """
    budget = sc.dp.max_epsilon
    ledger = state.ledger
    if budget is None or ledger is None:
        return None
    if sc.dp.mode == "user" and sc.dp.client_sampling == "poisson":
        return None
    cache = state._budget_cache
    z_user = user_noise_multiplier(sc) if sc.dp.mode == "user" else 0.0

    def ok(client: int) -> bool:
        if sc.dp.mode == "sample":
            n = ledger.participations(client)
        else:
            n = state.user_participations.get(client, 0)
        hit = cache.get(client)
        if hit is not None and hit[0] == n:
            return hit[1]
        if sc.dp.mode == "sample":
            eps = ledger.projected_epsilon(client, _planned_event(sc, int(sizes[client])))
        else:
            eps = epsilon(
                noise_multiplier=z_user,
                sample_rate=1.0,
                steps=n + 1,
                delta=sc.dp.delta,
                accountant=sc.dp.accountant,
            )
        cache[client] = (n, eps <= budget)
        return eps <= budget

    def available() -> list[int]:
        return [c for c in range(sc.population) if ok(c)]

    return available


def _budget_stop(sc: Scenario, state: _ServerState, strategy: Any, vgrid: Any) -> str | None:
    """Why the run must stop before this round (budget exhausted), or None."""
    budget = sc.dp.max_epsilon
    ledger = state.ledger
    if budget is None or ledger is None:
        return None
    if isinstance(strategy, DPFedAvg) and strategy.sampling == "poisson":
        eps = ledger.projected_user_epsilon(
            noise_multiplier=strategy.noise_multiplier, sample_rate=strategy.sample_rate
        )
        if eps > budget:
            return (
                f"privacy budget reached: one more user-level release would bring epsilon "
                f"to {eps:.3f} > dp.max_epsilon = {budget:g}; stopped before round "
                f"{vgrid.current_round + 1}"
            )
        return None
    available = vgrid.get_node_ids()
    need = sc.clients_per_round
    if len(available) < need:
        return (
            f"privacy budget reached: only {len(available)} client(s) can take part again "
            f"without exceeding dp.max_epsilon = {budget:g}, {need} needed per round; "
            f"stopped before round {vgrid.current_round + 1}"
        )
    return None


def _client_counts(report: RoundReport) -> dict[str, Any]:
    """What happened to the sampled clients: trained, dropped, late, failed (with errors).

    An attempt whose worker failed and that was sent again is not a failed client
    (its re-send's outcome counts); it shows in `cohorts_resent`, and the restarted
    workers in `worker_restarts`.
    """
    outs = [o for o in report.outcomes if not o.extra.get("resent")]
    dropped = [o for o in outs if o.extra.get("dropped")]
    late = [o for o in outs if o.error is not None and o.extra.get("late")]
    failed = [o for o in outs if o.error is not None and o not in dropped and o not in late]
    sim = [float(o.extra["sim_seconds"]) for o in outs if "sim_seconds" in o.extra]
    return {
        "clients_trained": sum(1 for o in outs if o.error is None),
        "clients_failed": len(failed),
        "clients_dropped": len(dropped),
        "clients_late": len(late),
        "sim_round_seconds": max(sim) if sim else None,
        "failures": [{"client": o.client, "error": o.error} for o in failed],
        "cohorts_resent": report.cohorts_resent,
        "worker_restarts": report.worker_restarts,
    }


def _fairness(report: RoundReport) -> dict[str, Any]:
    """Per-client view of federated evaluation: unweighted mean and worst decile.

    The worst-decile accuracy is the mean over the 10 % of evaluated clients with the
    lowest accuracy (at least one client): what the least-served clients get.
    """
    accs = sorted(
        float(o.metrics["accuracy"])
        for o in report.outcomes
        if o.error is None and o.metrics is not None and int(o.metrics["num-examples"]) > 0
    )
    if not accs:
        return {"fed_clients": 0, "fed_accuracy_client_mean": None, "fed_accuracy_worst10": None}
    k = max(1, len(accs) // 10)
    return {
        "fed_clients": len(accs),
        "fed_accuracy_client_mean": float(np.mean(accs)),
        "fed_accuracy_worst10": float(np.mean(accs[:k])),
    }


def _test_indices(sc: Scenario, n: int) -> np.ndarray | None:
    cap = sc.evaluation.max_test_samples
    if cap is None or cap >= n:
        return None
    return np.sort(numpy_rng(sc.seed, "test-subset").choice(n, size=cap, replace=False))


def _record_privacy(state: _ServerState, report: RoundReport, sizes: np.ndarray) -> None:
    """Enter every reported privacy event in the ledger, checked against the plan."""
    if state.ledger is None:
        return
    for o in report.outcomes:
        if o.privacy is None and o.error is not None and o.error.startswith("cohort failed"):
            if state.scenario.dp.mode != "sample":
                continue
            # The worker was lost mid-round: how far this client trained is unknown, so
            # it is charged its whole planned participation (an upper bound).
            plan = plan_participation(state.scenario, int(sizes[o.client]))
            o.privacy = plan.event(plan.steps)
            o.error += " (privacy charged as the planned participation: an upper bound)"
        if o.privacy is None:
            continue  # dropped before training
        event = PrivacyEvent(
            noise_multiplier=float(o.privacy["noise_multiplier"]),
            sample_rate=float(o.privacy["sample_rate"]),
            steps=int(o.privacy["steps"]),
            max_grad_norm=float(o.privacy["max_grad_norm"]),
            delta=float(o.privacy["delta"]),
        )
        extra: dict[str, Any] = {}
        problem = _check_event(state.scenario, event, int(sizes[o.client]))
        if problem:
            extra["mismatch"] = problem
            state.mismatches += 1
        if o.error is not None:
            extra["error"] = o.error
        status = "trained"
        if o.error is not None:
            status = "late" if o.extra.get("late") else "failed"
        state.ledger_lines += 1
        state.ledger.record(
            round=report.round, client=o.client, event=event, status=status, **extra
        )


def _check_event(sc: Scenario, event: PrivacyEvent, shard_size: int) -> str | None:
    plan = plan_participation(sc, shard_size)
    problems = []
    for name in ("noise_multiplier", "sample_rate", "max_grad_norm", "delta"):
        got, want = getattr(event, name), getattr(plan, name)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{name} {got} != planned {want}")
    if event.steps > plan.steps:
        problems.append(f"steps {event.steps} > planned {plan.steps}")
    return "; ".join(problems) or None


def _epsilon_row(state: _ServerState, sc: Scenario) -> dict[str, Any]:
    s = _epsilon_summary(state, sc)
    if s is None:
        return {"epsilon_min": None, "epsilon_median": None, "epsilon_max": None}
    return {"epsilon_min": s["min"], "epsilon_median": s["median"], "epsilon_max": s["max"]}


def _epsilon_summary(state: _ServerState, sc: Scenario) -> dict[str, float] | None:
    """Per-client epsilon min/median/max over the population, at the scenario's level."""
    ledger = state.ledger
    if ledger is None:
        return None
    return ledger.level_summary(sc.population, sc.dp.mode)


def _finite(record: Any, key: str) -> float | None:
    if record is None or key not in record:
        return None
    value = float(record[key])
    return value if math.isfinite(value) else None


def versions() -> dict[str, str]:
    """Versions of everything that can change a result."""
    import flwr
    import opacus
    import ray

    return {
        "fedsim": fedsim.__version__,
        "flwr": flwr.__version__ if hasattr(flwr, "__version__") else _dist("flwr"),
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _dist(name: str) -> str:
    from importlib.metadata import version

    return version(name)


__all__ = ["RunInterrupted", "RunResult", "SimulationError", "ScenarioError", "resume", "run"]
