"""Experiment tracking: TensorBoard event files and/or an MLflow run beside the run's own
JSON-lines files, from the scenario's ``[tracking]`` section.

The simulation calls :meth:`Tracker.on_round` once per round with the metrics line it
writes and :meth:`Tracker.on_end` with the summary (which closes the back-ends). A run
that stops before its end (signal, failure) has its back-ends closed at interpreter
exit, the MLflow run marked KILLED (it is resumable). Both
back-ends receive every numeric metric of the round (accuracy, loss, epsilon min /
median / max, clients trained and failed, seconds...) at step = round, and the resolved
scenario as hyper-parameters. The JSON-lines files stay the record: a tracking back-end
that fails is switched off with a warning, it never stops the run.

A resumed run appends to the same TensorBoard directory (steps continue) and reopens
the same MLflow run (its id is kept in ``RUN_DIR/tracking.json``).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedsim.config import Scenario, ScenarioError

__all__ = ["Tracker", "check_installed", "flat_params", "open_tracker", "round_scalars"]

TENSORBOARD_DIR = "tensorboard"
MLRUNS_DIR = "mlruns"
MLFLOW_DB = "mlflow.db"
STATE_FILE = "tracking.json"
# MLflow caps a parameter value at 6000 characters and a batch at 100 parameters.
_MLFLOW_VALUE_MAX = 6000
_MLFLOW_BATCH = 100


def flat_params(scenario: Scenario) -> dict[str, str | int | float | bool]:
    """The resolved scenario as dotted-key hyper-parameters (lists as text, no None)."""
    out: dict[str, str | int | float | bool] = {}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value is not None:
                keep = isinstance(value, bool | int | float | str)
                out[f"{prefix}{key}"] = value if keep else json.dumps(value)

    walk(scenario.model_dump(mode="json"), "")
    return out


def round_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line, by key (``round`` itself is the step)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "round"
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class Tracker:
    """Fans each round's metrics out to the enabled back-ends (none: does nothing)."""

    def __init__(self, backends: list[Any]) -> None:
        self._backends = backends

    def on_round(self, row: dict[str, Any]) -> None:
        """One round's metrics line, as written to metrics.jsonl."""
        self._each("on_round", int(row["round"]), round_scalars(row))

    def on_end(self, summary: dict[str, Any]) -> None:
        """The run finished with `summary` (final accuracy, epsilon); closes the back-ends."""
        final = {f"final_{k}": v for k, v in round_scalars(summary).items()}
        eps = summary.get("epsilon")
        if isinstance(eps, dict):
            final.update({f"final_epsilon_{k}": v for k, v in round_scalars(eps).items()})
        self._each("on_end", final)
        self.close()

    def close(self) -> None:
        """Flush and close every back-end (after on_end, or when the run stopped)."""
        self._each("close")
        self._backends = []

    def _each(self, method: str, *args: Any) -> None:
        for backend in list(self._backends):
            try:
                getattr(backend, method)(*args)
            except Exception as exc:  # noqa: BLE001 - tracking must not end a run
                warnings.warn(
                    f"tracking: {type(backend).__name__} failed ({exc}); switched off for "
                    "this run (metrics.jsonl holds every round)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._backends.remove(backend)


def check_installed(scenario: Scenario) -> None:
    """Refuse a ``[tracking]`` section whose packages are not installed (before a run).

    Raises:
        ScenarioError: naming the flag and the pip extra that installs its package.
    """
    import importlib.util

    problems = [
        f"tracking.{flag} = true needs the {flag} package: pip install 'fedsim[tracking]'"
        for flag in ("tensorboard", "mlflow")
        # find_spec finds the package without importing it (seconds for mlflow).
        if getattr(scenario.tracking, flag) and importlib.util.find_spec(flag) is None
    ]
    if problems:
        raise ScenarioError(problems)


def open_tracker(
    scenario: Scenario, run_dir: Path, phase: Callable[[str], None] | None = None
) -> Tracker:
    """The back-ends the scenario's ``[tracking]`` section asks for, opened in run_dir.

    Args:
        scenario: The run's scenario.
        run_dir: The run directory.
        phase: Told "opening ..." before each back-end starts (the progress display:
            importing MLflow and creating its database take seconds).

    Raises:
        ScenarioError: a back-end's package is not installed (see :func:`check_installed`).
    """
    check_installed(scenario)
    cfg = scenario.tracking
    backends: list[Any] = []
    if cfg.tensorboard:
        if phase is not None:
            phase("opening TensorBoard event files")
        backends.append(_TensorBoard(scenario, Path(run_dir) / TENSORBOARD_DIR))
    if cfg.mlflow:
        if phase is not None:
            phase("opening the MLflow run")
        # MLflow logs its database set-up at INFO; the progress display says it instead.
        with _quiet("mlflow", "alembic"):
            backends.append(_MLflow(scenario, Path(run_dir)))
    return Tracker(backends)


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


class _TensorBoard:
    def __init__(self, scenario: Scenario, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._params = flat_params(scenario)
        self._writer = SummaryWriter(log_dir=str(log_dir))
        self._writer.add_text("scenario", "```\n" + scenario.to_toml() + "```", 0)
        atexit.register(self.close)  # a run stopped early still leaves complete files

    def on_round(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def on_end(self, final: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Written into this writer's own event file (SummaryWriter.add_hparams would
        # open a second run directory for them).
        for event in hparams(self._params, final):
            self._writer.file_writer.add_summary(event)
        for key, value in final.items():
            self._writer.add_scalar(key, value, 0)

    def close(self) -> None:
        atexit.unregister(self.close)
        self._writer.close()


class _MLflow:
    def __init__(self, scenario: Scenario, run_dir: Path) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        cfg = scenario.tracking
        self._ended = False
        self._client = MlflowClient(tracking_uri=_file_uri(cfg.tracking_uri, run_dir))
        state_file = run_dir / STATE_FILE
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
        self.run_id = state.get("mlflow_run_id")
        if self.run_id is not None:  # a resume: continue the same MLflow run
            self._client.update_run(self.run_id, status="RUNNING")
            atexit.register(self.close)
            return
        name = cfg.experiment or scenario.name
        found = self._client.get_experiment_by_name(name)
        artifacts = (run_dir / MLRUNS_DIR).resolve().as_uri()
        experiment = (
            found.experiment_id
            if found
            else self._client.create_experiment(name, artifact_location=artifacts)
        )
        self.run_id = self._client.create_run(experiment, run_name=scenario.name).info.run_id
        state_file.write_text(json.dumps({"mlflow_run_id": self.run_id}) + "\n", encoding="utf-8")
        params = [Param(k, str(v)[:_MLFLOW_VALUE_MAX]) for k, v in flat_params(scenario).items()]
        for i in range(0, len(params), _MLFLOW_BATCH):
            self._client.log_batch(self.run_id, params=params[i : i + _MLFLOW_BATCH])
        self._client.log_text(self.run_id, scenario.to_toml(), "scenario.toml")
        atexit.register(self.close)

    def on_round(self, step: int, scalars: dict[str, float]) -> None:
        self._log(scalars, step)

    def on_end(self, final: dict[str, float]) -> None:
        self._log(final, 0)
        self._client.set_terminated(self.run_id, status="FINISHED")
        self._ended = True

    def close(self) -> None:
        atexit.unregister(self.close)
        if not self._ended:
            # Stopped before the end (signal, failure): resumable, so not "FINISHED".
            self._client.set_terminated(self.run_id, status="KILLED")

    def _log(self, scalars: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), _MLFLOW_BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[i : i + _MLFLOW_BATCH])


def _file_uri(tracking_uri: str | None, run_dir: Path) -> str:
    """A local MLflow store URI: by default an SQLite file in the run directory (MLflow 3
    keeps its plain file store only behind an opt-in); a bare path made absolute, as a
    file store (so a name like "databricks" stays a directory, never a hosted service)."""
    if tracking_uri is None:
        return "sqlite:///" + str((run_dir / MLFLOW_DB).resolve())
    if tracking_uri.lower().startswith(("file:", "sqlite:")):
        return tracking_uri
    return Path(tracking_uri).expanduser().resolve().as_uri()
