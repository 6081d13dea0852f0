"""FedNova: normalized averaging (Wang et al. 2020, NeurIPS).

"Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization". Clients that take more local steps move further; FedAvg's plain
average then optimises a surrogate objective weighted by the steps taken. FedNova
divides each client's change by the norm of its step-weight vector a_i before
averaging, and rescales by an effective step count:

    d_i      = (x - y_i) / ||a_i||_1        (normalized update of client i)
    p_i      = n_i / sum_j n_j              (num-examples weights)
    tau_eff  = sum_i p_i ||a_i||_1
    x       <- x - tau_eff * sum_i p_i d_i

||a_i||_1 is tau_i for plain local SGD. For SGD with momentum rho (buffer
v <- rho v + g, step -lr v: torch.optim.SGD with dampening 0) the paper gives
a_i = [1 - rho^tau_i, 1 - rho^(tau_i - 1), ..., 1 - rho] / (1 - rho), so

    ||a_i||_1 = (tau_i - rho (1 - rho^tau_i) / (1 - rho)) / (1 - rho)

(the authors' code, github.com/JYWa/FedNova, accumulates the same sum step by
step: counter <- rho * counter + 1; norm += counter).

With equal tau_i this is FedAvg's num-examples weighted average exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsim.strategies.scaffold import cast_to, reply_update, valid_replies


def step_norm(tau: int, momentum: float = 0.0) -> float:
    """||a||_1 of a client that took `tau` local (momentum) SGD steps.

    The gradient of step k (1..tau) reaches the final weights with coefficient
    sum_{j=0}^{tau-k} rho^j = (1 - rho^(tau-k+1)) / (1 - rho); summed over k this is
    (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho) (Wang et al. 2020, a_i for
    momentum SGD), and tau for rho = 0.
    """
    if tau <= 0:
        return 0.0
    rho = float(momentum)
    if rho == 0.0:
        return float(tau)
    return (tau - rho * (1.0 - rho**tau) / (1.0 - rho)) / (1.0 - rho)


class FedNova(FedAvg):
    """FedNova over FedAvg's sampling and messaging.

    Args:
        fraction_train ... evaluate_metrics_aggr_fn: as for Flower's FedAvg.
        momentum: rho, the clients' SGD momentum (scenario train.momentum).
    """

    def __init__(
        self,
        *,
        momentum: float = 0.0,
        **fedavg_options: Any,
    ) -> None:
        # Flower's FedAvg keywords (sampling, record keys, metric aggregation) pass
        # through; the scenario's options are checked against FedAvg's signature too
        # (fedsim.registry.signature_options follows **kwargs to the base class).
        super().__init__(**fedavg_options)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self._x: dict[str, np.ndarray] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages; the global arrays are kept for the normalized updates."""
        self._x = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """x - tau_eff * sum_i p_i (x - y_i) / ||a_i||_1; failed clients are skipped.

        Raises:
            RuntimeError: called before configure_train.
            ValueError: a reply lacks "local_steps" or one of the model's arrays.
        """
        checked = valid_replies(self, replies)
        if checked is None:
            return None, None
        valid, x = checked
        weights = [
            float(next(iter(m.content.metric_records.values()))[self.weighted_by_key])  # type: ignore[arg-type]
            for m in valid
        ]
        total = sum(weights)
        if total <= 0:
            return None, None
        agg = {k: np.zeros(v.shape, dtype=np.float64) for k, v in x.items()}
        tau_eff = 0.0
        for msg, w in zip(valid, weights, strict=True):
            y, steps = reply_update(msg, x)
            a = step_norm(steps, self.momentum)
            p = w / total
            tau_eff += p * a
            if a <= 0:
                continue  # no local step: y_i = x, nothing to add
            for k in x:
                agg[k] += p * (x[k].astype(np.float64) - y[k]) / a
        new_x = {k: cast_to(v.astype(np.float64) - tau_eff * agg[k], v.dtype) for k, v in x.items()}
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord({k: Array(v) for k, v in new_x.items()}), metrics
