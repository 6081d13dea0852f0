"""Per-process state of a Ray worker: scenario, dataset, shards and trainer, built once.

Ray actors live across rounds, so this cache survives between messages: the data
set is loaded and partitioned once per process, and the model with its Opacus
wrapper is built once and reused for every client the worker trains.
"""

from __future__ import annotations

import json
import os
import traceback

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from fedsim.clients.cohort import ClientJob, CohortTrainer, JobOutcome
from fedsim.clients.engine import EngineChoice, choose_engine
from fedsim.clients.trainer import ClientFailure, LocalTrainer, build_global_model
from fedsim.clients.vectorised import VectorisedTrainer
from fedsim.config import Scenario
from fedsim.data import DatasetBundle
from fedsim.failures import outcome_fields, short_reason
from fedsim.models.evaluate import evaluate
from fedsim.protocol import ClientOutcome, CohortRequest
from fedsim.seeding import numpy_rng
from fedsim.shards import Shards, build_shards, load_scenario_data


class WorkerState:
    """Everything a worker process reuses across cohorts of one scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        torch.set_num_threads(scenario.backend.threads_per_worker)
        use_gpu = scenario.backend.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.bundle: DatasetBundle = load_scenario_data(scenario)
        self.shards: Shards = build_shards(scenario, self.bundle)
        self.engine: EngineChoice = choose_engine(
            scenario,
            build_global_model(scenario, self.bundle.input_shape, self.bundle.num_classes),
            self.bundle.train,
        )
        trainer_cls = VectorisedTrainer if self.engine.engine == "vectorised" else LocalTrainer
        self.trainer: CohortTrainer = trainer_cls(
            scenario,
            self.bundle.train,
            self.bundle.input_shape,
            self.bundle.num_classes,
            device=self.device,
        )

    def run_cohort(self, req: CohortRequest) -> list[ClientOutcome]:
        """Run every client of a cohort; one client's failure does not stop the others.

        Training goes to the trainer in chunks cut from the cohort by position (the
        grid cuts cohorts from the round's sorted clients in multiples of the chunk
        size), so a chunk holds the same clients whatever K and the worker count.
        """
        states: dict[int, dict[str, torch.Tensor]] = {}

        def state_of(pos: int) -> dict[str, torch.Tensor]:
            j = req.record_index(pos, "arrays")
            if j not in states:  # convert the shared global model once per cohort
                states[j] = req.content_for(pos)["arrays"].to_torch_state_dict()
            return states[j]

        if req.kind != "train":
            return [self._evaluate(c, state_of(pos)) for pos, c in enumerate(req.clients)]
        outcomes: dict[int, ClientOutcome] = {}
        size = self.trainer.chunk_size
        for start in range(0, len(req.clients), size):
            jobs = []
            for pos in range(start, min(start + size, len(req.clients))):
                client = req.clients[pos]
                early = self._before_training(client, req.round)
                if early is not None:
                    outcomes[client] = early
                    continue
                config = _client_config(req.content_for(pos))
                jobs.append(
                    ClientJob(client, req.round, self.shards.train[client], state_of(pos), config)
                )
            for job, done in zip(jobs, self.trainer.train_cohort(jobs), strict=True):
                outcomes[job.client] = self._after_training(job, done)
        return [outcomes[c] for c in req.clients]

    def _before_training(self, client: int, round: int) -> ClientOutcome | None:
        """A client's dropout (or an injected worker crash) before it trains."""
        faults = self.scenario.faults
        if faults.dropout_probability > 0:
            draw = numpy_rng(self.scenario.seed, "dropout", round, client).random()
            if draw < faults.dropout_probability:
                # Dropped before training: nothing trained, no privacy spent.
                return ClientOutcome(
                    client=client, error="dropped before training", extra={"dropped": 1}
                )
        crash = faults.crash_worker_at
        if crash is not None and list(crash) == [round, client]:
            os._exit(17)  # a worker process dying mid-round, as an OOM kill would
        return None

    def _failed_outcome(self, job: ClientJob, done: JobOutcome) -> ClientOutcome:
        """The outcome of a client whose training raised: the error and its privacy."""
        exc = done.error
        if exc is None:  # a JobOutcome holds a result or the error that stopped it
            raise RuntimeError(f"client {job.client}: a job outcome with neither result nor error")
        # An injected fault is data; anything else is the client's code failing,
        # which the server counts (fedsim.failures) and logs with its traceback.
        real = not isinstance(exc, ClientFailure)
        out = ClientOutcome(
            client=job.client, error=_describe(exc), extra=outcome_fields(exc) if real else {}
        )
        out.steps_before_error = done.steps_done
        out.privacy = done.event  # what its DP optimizer ran before the failure
        return out

    def _after_training(self, job: ClientJob, done: JobOutcome) -> ClientOutcome:
        """The outcome of a trained (or failed) client: privacy, lateness, NaN checks."""
        client = job.client
        faults = self.scenario.faults
        seed = self.scenario.seed
        res = done.result
        if res is None:
            return self._failed_outcome(job, done)
        # The event the client's DP optimizer ran (None without DP), as the trainer
        # recorded it: the server checks it against its own plan.
        privacy = done.event
        extra: dict[str, float | int] = {}
        if faults.speed_sigma > 0 or faults.round_deadline is not None:
            sim_seconds = res.steps * client_speed(self.scenario, client)
            extra["sim_seconds"] = sim_seconds
            if faults.round_deadline is not None and sim_seconds > faults.round_deadline:
                extra["late"] = 1
                if not faults.accept_late:
                    # It trained (privacy spent) but its update misses the round.
                    return ClientOutcome(
                        client=client,
                        error=f"late: finished at {sim_seconds:.1f} > deadline "
                        f"{faults.round_deadline:g} simulated seconds",
                        steps_before_error=res.steps,
                        privacy=privacy,
                        extra=extra,
                    )
        if faults.nan_probability > 0:
            if numpy_rng(seed, "nan", job.round, client).random() < faults.nan_probability:
                first = next(iter(res.state))
                res.state[first] = torch.full_like(res.state[first], float("nan"))
        if not all(bool(torch.isfinite(t).all()) for t in res.state.values()):
            # Never sent for aggregation: one NaN would poison the global model. The
            # client did train, so its privacy event stays for the ledger. Checked here,
            # on the tensors, so the server does not decode every update twice.
            return ClientOutcome(
                client=client,
                error="rejected: update has non-finite values (NaN/inf)",
                steps_before_error=res.steps,
                privacy=privacy,
                extra=extra,
            )
        return ClientOutcome(
            client=client,
            extra=extra,
            arrays=ArrayRecord(res.state),
            metrics=MetricRecord(
                {
                    "num-examples": res.num_examples,
                    "train_loss": res.train_loss,
                    "local_steps": res.steps,
                }
            ),
            privacy=privacy,
        )

    def _evaluate(self, client: int, state: dict[str, torch.Tensor]) -> ClientOutcome:
        self.trainer.load_state(state)
        res = evaluate(
            self.trainer.model,
            self.bundle.train,
            self.shards.holdout[client],
            batch_size=self.scenario.evaluation.batch_size,
            device=self.device,
        )
        metrics = {"num-examples": res.num_examples, "loss": res.loss, "accuracy": res.accuracy}
        return ClientOutcome(client=client, metrics=MetricRecord(metrics))


def _client_config(content: dict) -> dict[str, object]:
    """The strategy's ConfigRecord for a client, with its per-client array records
    (SCAFFOLD's "correction", FedDyn's "feddyn-grad": objective inputs) decoded."""
    config = dict(content["config"]) if "config" in content else {}
    for key, record in content.items():
        if key not in ("arrays", "config") and isinstance(record, ArrayRecord):
            config[key] = record.to_torch_state_dict()
    return config


def client_speed(scenario: Scenario, client: int) -> float:
    """Seconds per local step of a client: a fixed, seeded LogNormal(0, speed_sigma) draw."""
    sigma = scenario.faults.speed_sigma
    if sigma <= 0:
        return 1.0
    return float(numpy_rng(scenario.seed, "speed", client).lognormal(0.0, sigma))


def _describe(exc: BaseException) -> str:
    """One line for the ledger and metrics: the error and the line that raised it."""
    if isinstance(exc, ClientFailure):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
    return short_reason(f"{short_reason(exc)}{where}")


class SetupFailure:
    """A worker that could not build the scenario's data, model or trainer.

    Every client sent to it fails with the same one-line reason, marked fatal: the
    server stops the run before another round (a worker-side import error, say, would
    otherwise fail every client of every round).
    """

    def __init__(self, exc: BaseException) -> None:
        self.reason = f"a worker could not set up the scenario: {_describe(exc)}"
        self.extra = outcome_fields(exc, fatal=True)

    def run_cohort(self, req: CohortRequest) -> list[ClientOutcome]:
        return [
            ClientOutcome(client=c, error=self.reason, extra=dict(self.extra)) for c in req.clients
        ]


_STATE: dict[str, WorkerState] = {}


def worker_state(scenario_json: str) -> WorkerState | SetupFailure:
    """The cached state for a scenario, built on first use in this process.

    A failure to build it is returned as a `SetupFailure` (not cached: the next
    cohort tries again), so the cohort's reply names the reason in one line instead
    of a Ray traceback.
    """
    state = _STATE.get(scenario_json)
    if state is None:
        _STATE.clear()  # one scenario per worker at a time: free the previous one
        try:
            state = WorkerState(Scenario.model_validate(json.loads(scenario_json)))
        except Exception as exc:  # noqa: BLE001 - reported to the server, which stops
            return SetupFailure(exc)
        _STATE[scenario_json] = state
    return state


def shard_sizes(scenario: Scenario) -> np.ndarray:
    """Training shard size of every client (used by the server's plan checks)."""
    return build_shards(scenario, load_scenario_data(scenario)).sizes()
