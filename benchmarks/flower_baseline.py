"""Plain Flower, written the way Flower's own PyTorch and Opacus examples write a client.

Used by `benchmarks.rounds` as the baseline of the vectorised engine. Per train message (one
per client, Flower's FedAvg from `flwr.serverapp.strategy`), the ClientApp's train function
builds a new model, loads the received weights, wraps the client's shard in a `DataLoader`
(shuffled, the scenario's batch size) and an SGD optimizer, with DP-SGD calls Opacus'
`PrivacyEngine().make_private` (Poisson sampling, the scenario's noise multiplier and clip),
trains `train.epochs` epochs and replies with its weights and example count. The data set and
its partition are loaded once per worker process, as the examples keep their
`FederatedDataset` in a module global.

Same clients, data, model and seeds as the fedsim runs of the benchmark: the scenario's data
set, shards (`fedsim.shards.build_shards`) and model (`build_global_model`, the same initial
weights) are used; the scenario goes to the clients in the train config, as the examples send
their hyper-parameters. Ray is started as fedsim starts it (loopback only, `backend.workers`
CPUs, one per client task).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ClientApp()
_DATA: dict[str, Any] = {}  # scenario JSON -> (bundle, shards): once per worker process


def _data(scenario_json: str) -> tuple[Any, Any, Any]:
    from fedsim.clients.worker import load_scenario_data
    from fedsim.config import Scenario
    from fedsim.shards import build_shards

    if scenario_json not in _DATA:
        sc = Scenario.model_validate(json.loads(scenario_json))
        bundle = load_scenario_data(sc)
        _DATA.clear()
        _DATA[scenario_json] = (sc, bundle, build_shards(sc, bundle))
    return _DATA[scenario_json]


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One client's local training, built from scratch as in Flower's examples."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fedsim.clients.trainer import build_global_model

    config = msg.content["config"]
    sc, bundle, shards = _data(str(config["scenario"]))
    rnd = int(config["server-round"])
    cid = int(context.node_config["partition-id"])
    torch.set_num_threads(sc.backend.threads_per_worker)
    torch.manual_seed(sc.seed * 1_000_003 + rnd * 10_007 + cid)
    model = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = bundle.train.batch(shards.train[cid])
    loader = DataLoader(TensorDataset(x, y), batch_size=sc.train.batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=sc.train.lr)
    if sc.dp.mode == "sample":
        from opacus import PrivacyEngine

        model, optimizer, loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=sc.dp.noise_multiplier,
            max_grad_norm=sc.dp.max_grad_norm,
        )
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(sc.train.epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            criterion(model(xb), yb).backward()
            optimizer.step()
    state = getattr(model, "_module", model).state_dict()
    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "metrics": MetricRecord({"num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


class _TimedFedAvg(FedAvg):
    """FedAvg that records each round's wall time (configure_train to aggregate_train)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_seconds: list[float] = []
        self._t0 = 0.0

    def configure_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
        self._t0 = time.perf_counter()
        return super().configure_train(server_round, *args, **kwargs)

    def aggregate_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
        out = super().aggregate_train(server_round, *args, **kwargs)
        self.round_seconds.append(time.perf_counter() - self._t0)
        return out


def run_plain_flower(scenario: Any) -> dict[str, Any]:
    """Run `scenario.rounds` rounds of plain Flower FedAvg over every client of the scenario.

    Returns:
        ``round_seconds`` (one per round), ``startup_seconds`` (call to first round started)
        and the final ``state_dict``.
    """
    from flwr.simulation import run_simulation

    from fedsim.engine import ray_backend
    from fedsim.models.build import build_global_model

    _sc, bundle, _shards = _data(scenario.fingerprint())
    model = build_global_model(scenario, bundle.input_shape, bundle.num_classes)
    n = scenario.population
    strategy = _TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=n,
        min_evaluate_nodes=0,
        min_available_nodes=n,
    )
    result: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result["first_round_started"] = time.perf_counter()
        out = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=scenario.rounds,
            train_config=ConfigRecord({"scenario": scenario.fingerprint()}),
        )
        result["state_dict"] = out.arrays.to_torch_state_dict()

    session = ray_backend.LocalRay()
    started = time.perf_counter()
    try:
        # loopback-only Ray with the workers' CPUs, as fedsim starts it
        ray_backend.init_ray(scenario, session, threading.Event())
        run_simulation(
            server_app=server_app,
            client_app=app,
            num_supernodes=n,
            backend_name="ray",
            backend_config=ray_backend.backend_config(scenario),
        )
    finally:
        ray_backend.stop_ray(session)
    return {
        "round_seconds": strategy.round_seconds,
        "startup_seconds": result.get("first_round_started", started) - started,
        "state_dict": result.get("state_dict"),
    }
