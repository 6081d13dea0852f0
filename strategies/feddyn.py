"""FedDyn: federated learning based on dynamic regularization (Acar et al. 2021, ICLR).

Algorithm 1 of the paper. Client i minimises (fedsim.clients.objectives.FedDyn)

    L_i(w) - <g_i, w> + alpha/2 ||w - x||^2,     then  g_i <- g_i - alpha (w_i - x)

and the server, over the participants P of the round and the population m:

    h <- h - alpha/m * sum_{i in P} (w_i - x)
    x <- mean_{i in P} w_i - h / alpha

Simulated clients are stateless, so the server keeps every g_i, keyed by client id
(a client never seen has g_i = 0), sends it as the client's "feddyn-grad" record,
and advances it with the objective's own ``after_round`` on the weights the client
returned (`Objective.next_state`, looked up in the objective registry): one definition
of the client's update, in fedsim.clients.objectives.
Failed clients change nothing. Each message carries the round's config record
with "feddyn-alpha" added (one record shared by the cohort).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsim.protocol import FEDDYN_ALPHA, FEDDYN_STATE
from fedsim.registry import OBJECTIVES
from fedsim.strategies.scaffold import (
    cast_to,
    client_messages,
    flatten_clients,
    reply_update,
    unflatten_clients,
    valid_replies,
)


class FedDyn(FedAvg):
    """FedDyn over FedAvg's sampling and messaging.

    Args:
        fraction_train ... evaluate_metrics_aggr_fn: as for Flower's FedAvg.
        population: m, the number of clients (h's alpha/m step).
        alpha: the dynamic regulariser's weight (the paper uses 0.01 to 0.1).
    """

    def __init__(
        self,
        *,
        population: int,
        alpha: float = 0.01,
        **fedavg_options: Any,
    ) -> None:
        # Flower's FedAvg keywords (sampling, record keys, metric aggregation) pass
        # through; the scenario's options are checked against FedAvg's signature too
        # (fedsim.registry.signature_options follows **kwargs to the base class).
        super().__init__(**fedavg_options)
        if int(population) < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.population = int(population)
        self.alpha = float(alpha)
        #: server state h, keyed by parameter name (None until round 1)
        self.h_server: dict[str, np.ndarray] | None = None
        #: g_i of every client that has trained, by client id
        self.grad_clients: dict[int, dict[str, np.ndarray]] = {}
        self._x: dict[str, np.ndarray] | None = None
        # the client objective by its registry name: the server side imports no client module
        self._objective = OBJECTIVES.load("feddyn")()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling; each message gets alpha and its client's g_i (if any)."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._x = {k: v.numpy() for k, v in arrays.items()}
        if not messages:
            return messages
        shared = messages[0].content[self.configrecord_key]
        config_rec = ConfigRecord({**dict(shared), FEDDYN_ALPHA: self.alpha})

        def state(cid: int) -> dict[str, ArrayRecord]:
            g_i = self.grad_clients.get(cid)
            if g_i is None:
                return {}
            return {FEDDYN_STATE: ArrayRecord({k: Array(v) for k, v in g_i.items()})}

        return client_messages(self, messages, config_rec, state)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """New g_i by the objective's after_round, new h and x; errors are skipped."""
        checked = valid_replies(self, replies)
        if checked is None:
            return None, None
        valid, x = checked
        floats = [k for k, v in x.items() if np.issubdtype(v.dtype, np.floating)]
        h = self.h_server or {}
        h = {k: h.get(k, np.zeros(x[k].shape)).astype(np.float64) for k in floats}
        total = {k: np.zeros(v.shape, dtype=np.float64) for k, v in x.items()}
        for msg in valid:
            y, _ = reply_update(msg, x)
            for k in x:
                total[k] += y[k]
            for k in floats:
                h[k] -= self.alpha / self.population * (y[k] - x[k])
            self._advance_client(int(msg.metadata.src_node_id), x, y, floats)
        n = len(valid)
        new_x = {
            k: cast_to(total[k] / n - (h[k] / self.alpha if k in h else 0.0), v.dtype)
            for k, v in x.items()
        }
        self.h_server = {k: v.astype(x[k].dtype) for k, v in h.items()}
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord({k: Array(v) for k, v in new_x.items()}), metrics

    def _advance_client(
        self, cid: int, x: dict[str, np.ndarray], y: dict[str, np.ndarray], floats: list[str]
    ) -> None:
        """g_i <- after_round(ctx, w_i): the client objective's own state update."""
        old = self.grad_clients.get(cid)
        new = self._objective.next_state(
            {k: torch.from_numpy(x[k].astype(np.float64)) for k in floats},
            {k: torch.from_numpy(old[k].astype(np.float64)) for k in floats} if old else {},
            {FEDDYN_ALPHA: self.alpha},
            {k: torch.from_numpy(y[k]) for k in floats},
        )
        self.grad_clients[cid] = {k: v.numpy().astype(x[k].dtype) for k, v in new.items()}

    @property
    def grad_clients_flat(self) -> dict[str, np.ndarray]:
        """grad_clients as one flat dict "<client>/<parameter>" -> array (for checkpoints)."""
        return flatten_clients(self.grad_clients)

    @grad_clients_flat.setter
    def grad_clients_flat(self, flat: dict[str, np.ndarray]) -> None:
        self.grad_clients = unflatten_clients(flat)
