"""The server side of a run: a Flower ServerApp + ClientApp run on Flower's Ray engine.

The ServerApp drives Flower's own strategy round by round (the loop of
`Strategy.start`, with fedsim's bookkeeping between the steps) over a
`VirtualClientGrid`. The client side (the ClientApp Flower launches on the workers,
and the engine probe they apply) is handed in as a `ClientSide` by the composition
root, `fedsim.launch`: this module imports no client module. Users call
`fedsim.run` / `fedsim.launch.run`, which fill it in.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

import fedsim
from fedsim.cli.progress import RunProgress
from fedsim.config import Scenario, ScenarioError
from fedsim.data.cache import FOLDER as DATA_CACHE_FOLDER
from fedsim.data.cache import run_cache
from fedsim.engine.checkpoint import Checkpoint, plan_resume, restore_strategy_state, scenario_hash
from fedsim.engine.grid import RunStopped, VirtualClientGrid
from fedsim.engine.loop import Evaluator, RoundLoop, RoundObserver
from fedsim.engine.observers import (
    BudgetStop,
    CanaryAudit,
    Checkpointer,
    FailureObserver,
    MetricsWriter,
    OneShotAudit,
    ProgressObserver,
    SignalStop,
    TrackingObserver,
    final_weights,
)
from fedsim.engine.ray_backend import (
    ClusterUnreachableError,
    LocalRay,
    SimulationError,
    backend_config,
    check_ray_address,
    init_ray,
    num_supernodes,
    stop_ray,
)
from fedsim.engine.tracking import open_tracker
from fedsim.errors import FedsimError
from fedsim.failures import FailureWatch
from fedsim.models.build import build_global_model, choose_grad_sample_mode
from fedsim.models.evaluate import evaluate
from fedsim.privacy.accounting import PrivacyAccounting
from fedsim.protocol import ENGINE_FIELDS
from fedsim.rundir import (
    JsonLines,
    RunDir,
    RunDirCorruptError,
    RunDirError,
    read_jsonl,
    storage_errors,
)
from fedsim.seeding import numpy_rng
from fedsim.shards import build_shards, load_scenario_data
from fedsim.strategies import build_strategy


@dataclass
class RunResult:
    """What `fedsim.run` returns: where the files are, and the main numbers."""

    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    #: resume() of a run that had finished: nothing was run or written.
    already_complete: bool = False


@dataclass(frozen=True)
class ClientSide:
    """What the server needs of the client side, given to it by `fedsim.launch`.

    Attributes:
        app: the ClientApp Flower launches on every worker (`fedsim.clients.app.app`).
        choose_engine: ``(scenario, model, train set) -> choice``, the probe the workers
            apply too; the choice has ``engine``, ``vector_clients`` and ``summary()``.
            The server needs it for the chunk size V and the run summary.
    """

    app: Any
    choose_engine: Callable[[Scenario, Any, Any], Any]


def run(
    scenario: Scenario,
    out: str | Path | None = None,
    *,
    clients: ClientSide,
    overwrite: bool = False,
    progress: bool = True,
    observers: Sequence[RoundObserver] = (),
) -> RunResult:
    """Run a scenario end to end and write its run directory.

    Args:
        scenario: a validated Scenario (see `Scenario.from_toml`).
        out: run directory; default `runs/<scenario name>`.
        clients: the client side (`fedsim.launch.client_side()`).
        overwrite: replace an existing fedsim run directory (only fedsim's files in it).
        progress: show a live progress display on the terminal.
        observers: extra `RoundObserver`s, called after fedsim's own at each hook. They
            run in this process (the ServerApp is a thread of it), so they may keep
            what they see in their own attributes.

    Returns:
        RunResult with the run directory, summary, per-round metrics and final weights.

    Raises:
        RunDirError: the run directory exists, is not a fedsim run (with overwrite), is
            in use by another process, is not writable, or the disk filled up
            (StorageError: the run is resumable).
        SimulationError: the Ray cluster named in the scenario cannot be reached.
        RunInterrupted: SIGINT/SIGTERM stopped the run (it can be resumed).
    """
    check_ray_address(scenario)
    return _start(scenario, out, overwrite, progress, clients, observers)


def resume(
    run_dir: str | Path,
    *,
    clients: ClientSide,
    progress: bool = True,
    observers: Sequence[RoundObserver] = (),
) -> RunResult:
    """Continue a killed or interrupted run from its last checkpoint.

    `clients` is the client side, as for `run`.
    The scenario is the run directory's own `scenario.toml`. Checkpoint, metrics and
    ledger are all checked before anything is changed; then the lines written after
    the checkpoint are dropped (their rounds run again), except ledger lines of a
    `dp.secure_rng` run, which stay charged with status "discarded" (the re-run's
    fresh noise makes new releases). A finished run is left as it is. `observers`: as
    in `run`, from the round after the checkpoint.

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
    check_ray_address(scenario)
    try:
        with storage_errors(rundir.path):
            rundir.lock()
            checkpoint = _roll_back_to_checkpoint(rundir, scenario, tell=progress)
            state = ServerRun(
                scenario,
                rundir,
                RunProgress(scenario, enabled=progress),
                clients=clients,
                resume=checkpoint,
                observers=observers,
            )
            return _execute(scenario, state)
    finally:
        rundir.unlock()


def _roll_back_to_checkpoint(
    rundir: RunDir, scenario: Scenario, *, tell: bool
) -> Checkpoint | None:
    """Check checkpoint, metrics and ledger, then drop what was written after the checkpoint."""
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
    if plan.discarded and tell:
        from rich.console import Console

        Console(stderr=True).print(
            f"resume: {plan.discarded} ledger line(s) of the killed attempt kept as "
            "'discarded' (fresh noise: their releases stay charged)",
            markup=False,
            highlight=False,
        )
    return plan.checkpoint


def run_on_grid(
    grid: Grid,
    scenario: Scenario,
    out: str | Path | None = None,
    *,
    clients: ClientSide,
    overwrite: bool = False,
    progress: bool = False,
    observers: Sequence[RoundObserver] = (),
) -> RunResult:
    """Run a scenario's server loop over a Grid that Flower already provides.

    `clients` is the client side, as for `run` (its ClientApp is Flower's here; the
    engine probe still decides the chunk size).
    For a ServerApp that Flower's runtime started (`flwr run`, see fedsim.flower_app):
    Ray and the supernodes are Flower's, so nothing is started here. The run
    directory is created, written and finished exactly as by `run` (summary.json
    last); the cohorts go to the real node ids of `grid`. `observers`: as in `run`.

    Raises:
        RunDirError: as `run`.
        RunInterrupted: a stop request ended the run between rounds (resumable).
        Any error of the server loop (e.g. every client failing), after the files
        written so far are closed.
    """

    def on_grid(sc: Scenario, state: ServerRun) -> None:
        try:
            _server_loop(grid, sc, state)
        except RunStopped:  # the round in flight is dropped, as in `run`
            state.interrupt("interrupted by a signal during a round")
        except Exception as exc:  # raised by _execute once the files are closed
            state.fail(exc)

    return _start(scenario, out, overwrite, progress, clients, observers, simulate=on_grid)


def _start(
    scenario: Scenario,
    out: str | Path | None,
    overwrite: bool,
    progress: bool,
    clients: ClientSide,
    observers: Sequence[RoundObserver],
    simulate: Any = None,
) -> RunResult:
    """Create the run directory (under its lock), write the scenario, run, unlock."""
    rundir = RunDir(out if out is not None else Path("runs") / scenario.name)
    try:
        with storage_errors(rundir.path):
            rundir.create(overwrite=overwrite)  # takes the run's lock
            rundir.write_text(rundir.scenario, scenario.to_toml())
            state = ServerRun(
                scenario,
                rundir,
                RunProgress(scenario, enabled=progress),
                clients=clients,
                observers=observers,
            )
            return _execute(scenario, state, simulate=simulate)
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


def _execute(scenario: Scenario, state: ServerRun, simulate: Any = None) -> RunResult:
    rundir = state.rundir
    started = time.perf_counter()
    _STOP.clear()
    try:
        # The data set's arrays: written once into the run directory, mapped by every process.
        with run_cache(rundir.path / DATA_CACHE_FOLDER):
            (simulate or _simulate)(scenario, state)
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


class RunInterrupted(FedsimError, RuntimeError):
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


class ServerRun:
    """One run on the server side: its files, its privacy accounting, how it ended.

    `serve` runs the rounds (a `RoundLoop` with its observers); what it leaves here
    is what `_execute` needs after Ray has shut down.
    """

    def __init__(
        self,
        scenario: Scenario,
        rundir: RunDir,
        progress: RunProgress,
        *,
        clients: ClientSide,
        resume: Checkpoint | None = None,
        observers: Sequence[RoundObserver] = (),
    ) -> None:
        self.scenario = scenario
        self.clients = clients
        self.rundir = rundir
        self.progress = progress
        self.extra_observers = list(observers)  # the caller's, after fedsim's own
        self.tracker = open_tracker(scenario, rundir.path, progress.phase)
        self.resume_from = resume
        try:  # read back what a resumed run already has
            self.metrics: list[dict[str, Any]] = (
                read_jsonl(rundir.metrics) if rundir.metrics.exists() else []
            )
            self.metrics_file = JsonLines(rundir.metrics)
            self.accounting = PrivacyAccounting.open(scenario, rundir.ledger)
        except ValueError as exc:  # a corrupt line: bad input (exit 2), not a failed run
            raise RunDirCorruptError(f"cannot continue the run in {rundir.path}: {exc}") from exc
        self.grad_sample_mode: str | None = None
        self.engine: Any = None  # the client side's engine choice, once made
        self.final_state: dict[str, torch.Tensor] = {}
        self.error: BaseException | None = None
        self.interrupted = False
        self.stopped: str | None = None

    def interrupt(self, why: str) -> None:
        """The run stops early and stays resumable; the first reason given is kept."""
        self.interrupted = True
        if self.stopped is None:
            self.stopped = why

    def fail(self, exc: BaseException) -> None:
        """The run failed: `exc` is raised to the caller once Ray has shut down."""
        if self.error is None:
            self.error = exc

    def close(self) -> None:
        self.metrics_file.close()
        self.accounting.close()
        self.progress.stop()

    def serve(self, grid: Grid) -> None:
        """Build the run's components on `grid` and run its rounds."""
        sc = self.scenario
        self.progress.phase(f"loading data ({sc.data.name})")
        bundle = load_scenario_data(sc)
        self.progress.phase(f"building shards ({sc.population} clients)")
        shards = build_shards(sc, bundle)
        self.accounting.set_shard_sizes(shards.sizes())
        self.rundir.write_clients(shards.sizes())  # what the audit checks plans against
        strategy = build_strategy(sc, self.accounting)
        model = build_global_model(sc, bundle.input_shape, bundle.num_classes)
        engine = self._note_engine(model, bundle)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        arrays, first = ArrayRecord(model.state_dict()), 1
        if self.resume_from is not None:
            arrays = ArrayRecord({k: v.clone() for k, v in self.resume_from.weights.items()})
            restore_strategy_state(strategy, self.resume_from.strategy_state)
            first = self.resume_from.round + 1
        vgrid = VirtualClientGrid(
            grid,
            population=sc.population,
            workers=sc.backend.workers,
            clients_per_message=sc.backend.clients_per_message,
            scenario_json=sc.fingerprint(),
            chunk=engine.vector_clients or 1,
            available=self.accounting.budget_filter(),
            stop_event=_STOP,
        )
        loop = RoundLoop(
            sc,
            strategy=strategy,
            grid=vgrid,
            accounting=self.accounting,
            arrays=arrays,
            evaluate=_central_evaluation(sc, model, bundle),
            observers=self._observers(model, bundle, initial),
            first_round=first,
        )
        self.progress.start(sc.rounds, done=first - 1, previous=self.metrics[: first - 1])
        loop.run()
        if loop.stop is not None:
            self.stopped, self.interrupted = loop.stop.reason, loop.stop.interrupted
        self.final_state = final_weights(loop)

    def _note_engine(self, model: Any, bundle: Any) -> Any:
        """The same rules the workers apply to the same model: recorded in the summary."""
        sc = self.scenario
        engine = self.engine = self.clients.choose_engine(sc, model, bundle.train)
        if sc.dp.mode == "sample":
            self.grad_sample_mode = (
                "vectorised"
                if engine.engine == "vectorised"
                else choose_grad_sample_mode(model, sc.dp.grad_sample_mode)
            )
        return engine

    def _observers(self, model: Any, bundle: Any, initial: dict[str, Any]) -> list[RoundObserver]:
        """Signal and budget stops, failure watch, files, tracking, progress, audits,
        then the caller's: a round stopped before it starts is not started for them, and
        a round's row reaches them after it is written."""
        sc, accounting = self.scenario, self.accounting
        observers: list[RoundObserver] = [
            SignalStop(_STOP),
            BudgetStop(accounting, self.progress.note),
            FailureObserver(FailureWatch(sc, self.rundir.path)),
            MetricsWriter(self.metrics, self.metrics_file, accounting),
            TrackingObserver(self.tracker),
            Checkpointer(sc, self.rundir.checkpoints, self.metrics, accounting),
            ProgressObserver(self.progress),
        ]
        if sc.audit.canaries:
            observers.append(CanaryAudit(sc, self.rundir, accounting, model, bundle))
        if sc.dp.mode == "user" and sc.audit.canary_clients:
            observers.append(OneShotAudit(sc, self.rundir, accounting, initial))
        return observers + self.extra_observers

    def summary(self, wall: float) -> dict[str, Any]:
        sc = self.scenario
        evaluated = [m for m in self.metrics if m.get("accuracy") is not None]
        last = evaluated[-1] if evaluated else {}
        eps = self.accounting.epsilon_summary()
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
            **(self.engine.summary() if self.engine else dict.fromkeys(ENGINE_FIELDS)),
            "noise_rng": ("os-entropy" if sc.dp.secure_rng else "seeded")
            if sc.dp.mode != "off"
            else None,
            # With secure_rng batch masks and Poisson cohorts are secret as well.
            "sampling_rng": ("os-entropy" if sc.dp.secure_rng else "seeded")
            if sc.dp.mode != "off"
            else None,
            "clients_trained": sum(m["clients_trained"] for m in self.metrics),
            "clients_failed": sum(m["clients_failed"] for m in self.metrics),
            "ledger_mismatches": self.accounting.mismatches,
            "privacy_level": {"sample": "example", "user": "user"}.get(sc.dp.mode),
            "max_epsilon": sc.dp.max_epsilon if sc.dp.mode != "off" else None,
            "stopped_early": self.stopped,
            "resumed_from_round": self.resume_from.round if self.resume_from else None,
            "population": sc.population,
            "clients_per_round": sc.clients_per_round,
            "wall_seconds": round(wall, 3),
            "versions": versions(),
        }


def _simulate(scenario: Scenario, state: ServerRun) -> None:
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
        state.interrupt("stopped by a second signal")
    finally:
        _restore_signal_handlers(previous)


def _run_on_ray(
    scenario: Scenario, state: ServerRun, server_threads: list[threading.Thread]
) -> None:
    from flwr.simulation import run_simulation

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        server_threads.append(threading.current_thread())
        try:
            _server_loop(grid, scenario, state)
        except RunStopped:
            # A signal during a round: that round is dropped; the last checkpoint
            # (and the ledger lines up to it) stand.
            state.interrupt("interrupted by a signal during a round")
        except BaseException as exc:  # surfaced to the caller after Ray shuts down
            state.fail(exc)
            raise

    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    # fedsim shows its own progress and records failures itself; Flower's warnings
    # (deprecations of its Python API, "federated evaluation skipped") are noise here.
    flwr_logger.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    session = LocalRay()
    try:
        state.progress.phase("starting Ray")
        init_ray(scenario, session, _STOP)
        # ray.init installs its own SIGTERM handler (sys.exit); ours replaces it so
        # a signal stops the run cleanly instead.
        _install_signal_handlers()
        if _STOP.is_set():
            first = state.resume_from.round + 1 if state.resume_from else 1
            state.interrupt(f"interrupted during start-up, before round {first}")
            return
        state.progress.phase("starting the Flower simulation engine")
        _IN_FLOWER.set()
        try:
            run_simulation(
                server_app=server_app,
                client_app=state.clients.app,
                num_supernodes=num_supernodes(scenario),
                backend_name="ray",
                backend_config=backend_config(scenario),
            )
        finally:
            _IN_FLOWER.clear()
        if _SECOND_SIGNAL.is_set():
            state.interrupt("stopped by a second signal (in-flight cohorts dropped)")
    except Exception as exc:
        state.fail(exc)
    finally:
        flwr_logger.setLevel(old_level)
        stop_ray(session)


def _server_loop(grid: Grid, sc: Scenario, run: ServerRun) -> None:
    """The ServerApp's work: `run`'s rounds on Flower's grid (`ServerRun.serve`)."""
    run.serve(grid)


def _central_evaluation(sc: Scenario, model: Any, bundle: Any) -> Evaluator:
    """Accuracy and loss of the global weights on the test set (or its fixed subset)."""
    test_idx = _test_indices(sc, len(bundle.test))

    def evaluate_global(arrays: ArrayRecord) -> tuple[float, float]:
        model.load_state_dict(arrays.to_torch_state_dict())
        res = evaluate(model, bundle.test, test_idx, batch_size=sc.evaluation.batch_size)
        return res.accuracy, res.loss

    return evaluate_global


def _test_indices(sc: Scenario, n: int) -> np.ndarray | None:
    cap = sc.evaluation.max_test_samples
    if cap is None or cap >= n:
        return None
    return np.sort(numpy_rng(sc.seed, "test-subset").choice(n, size=cap, replace=False))


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


__all__ = [
    "ClusterUnreachableError",
    "RunInterrupted",
    "RunResult",
    "SimulationError",
    "ScenarioError",
    "resume",
    "run",
    "run_on_grid",
]
