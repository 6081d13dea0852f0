"""SCAFFOLD: stochastic controlled averaging (Karimireddy et al. 2020, ICML).

"SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", Algorithm 1 with
option II control variates. Every client i has a control variate c_i, the server
has c; a client corrects every local gradient step by c - c_i (the trainer adds the
"correction" record of its message to each step's gradient), and after K_i local
steps of learning rate eta_l from x to y_i:

    c_i+   = c_i - c + (x - y_i) / (K_i * eta_l)          (option II)
    x     <- x + eta_g * mean_{i in S} (y_i - x)
    c     <- c + |S| / N * mean_{i in S} (c_i+ - c_i)

Simulated clients are stateless (a worker trains whichever clients it is handed), so
the server keeps every c_i, keyed by client id: one model-sized set of arrays for
each client that has ever trained (memory grows with the clients seen; a client
never seen has c_i = 0). Failed clients change nothing, and |S| counts only the
clients whose update was aggregated.

Each client's message reuses the round's shared "arrays" and "config" records (sent
once per cohort by the grid) and adds its own "correction" record, keyed by
parameter name; all never-seen clients share one correction record (c - 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

#: Key of the per-client record holding c - c_i (read by the client trainer).
CORRECTION_KEY = "correction"
#: MetricRecord key of the number of local steps a client took.
LOCAL_STEPS_KEY = "local_steps"


class Scaffold(FedAvg):
    """SCAFFOLD over FedAvg's sampling and messaging.

    Args:
        fraction_train ... evaluate_metrics_aggr_fn: as for Flower's FedAvg.
        population: N, the number of clients (for c's |S| / N step).
        local_lr: eta_l, the clients' SGD learning rate (option II divides by it).
        global_lr: eta_g, the server's step on the mean update (1.0: plain averaging).
    """

    def __init__(
        self,
        *,
        population: int,
        local_lr: float,
        global_lr: float = 1.0,
        **fedavg_options: Any,
    ) -> None:
        # Flower's FedAvg keywords (sampling, record keys, metric aggregation) pass
        # through; the scenario's options are checked against FedAvg's signature too
        # (fedsim.registry.signature_options follows **kwargs to the base class).
        super().__init__(**fedavg_options)
        if int(population) < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        if not local_lr > 0:
            raise ValueError(f"local_lr must be > 0, got {local_lr}")
        if not global_lr > 0:
            raise ValueError(f"global_lr must be > 0, got {global_lr}")
        self.population = int(population)
        self.local_lr = float(local_lr)
        self.global_lr = float(global_lr)
        #: Server control variate c, keyed by parameter name (None until round 1).
        self.c_global: dict[str, np.ndarray] | None = None
        #: Control variate c_i of every client that has trained, by client id.
        self.c_clients: dict[int, dict[str, np.ndarray]] = {}
        self._x: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ rounds
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling; each message gets its client's correction c - c_i."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._x = {k: v.numpy() for k, v in arrays.items()}
        if not messages:
            return messages
        c = self._server_variate()
        unseen: ArrayRecord | None = None  # c - 0, shared by every never-seen client

        def correction(cid: int) -> dict[str, ArrayRecord]:
            nonlocal unseen
            c_i = self.c_clients.get(cid)
            if c_i is not None:
                return {CORRECTION_KEY: self._record({k: c[k] - c_i[k] for k in c})}
            if unseen is None:
                unseen = self._record(c)
            return {CORRECTION_KEY: unseen}

        config_rec = messages[0].content[self.configrecord_key]
        return client_messages(self, messages, config_rec, correction)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """New x from the mean update, new c and c_i (option II); errors are skipped.

        Raises:
            RuntimeError: called before configure_train.
            ValueError: a reply lacks "local_steps" or one of the model's arrays.
        """
        checked = valid_replies(self, replies)
        if checked is None:
            return None, None
        valid, x = checked
        c = self._server_variate()
        sum_dy = {k: np.zeros(v.shape, dtype=np.float64) for k, v in x.items()}
        sum_dc = {k: np.zeros(v.shape, dtype=np.float64) for k, v in c.items()}
        updated: dict[int, dict[str, np.ndarray]] = {}
        for msg in valid:
            cid = int(msg.metadata.src_node_id)
            y, steps = reply_update(msg, x)
            dy = {k: y[k] - x[k].astype(np.float64) for k in x}
            for k in x:
                sum_dy[k] += dy[k]
            c_i = self.c_clients.get(cid)
            new_ci: dict[str, np.ndarray] = {}
            for k, ck in c.items():
                old = np.zeros(ck.shape) if c_i is None else c_i[k].astype(np.float64)
                if steps > 0:
                    new = old - ck + (-dy[k]) / (steps * self.local_lr)
                else:  # no local step: nothing learnt about the client's drift
                    new = old
                sum_dc[k] += new - old
                new_ci[k] = new.astype(ck.dtype)
            updated[cid] = new_ci
        n = len(valid)
        new_x = {
            k: cast_to(v.astype(np.float64) + self.global_lr * sum_dy[k] / n, v.dtype)
            for k, v in x.items()
        }
        # c + |S|/N * mean_S(delta c_i) = c + sum_S(delta c_i) / N
        self.c_global = {
            k: (ck.astype(np.float64) + sum_dc[k] / self.population).astype(ck.dtype)
            for k, ck in c.items()
        }
        self.c_clients.update(updated)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord({k: Array(v) for k, v in new_x.items()}), metrics

    # ------------------------------------------------------------------ state
    @property
    def c_clients_flat(self) -> dict[str, np.ndarray]:
        """c_clients as one flat dict "<client>/<parameter>" -> array (for checkpoints)."""
        return flatten_clients(self.c_clients)

    @c_clients_flat.setter
    def c_clients_flat(self, flat: dict[str, np.ndarray]) -> None:
        self.c_clients = unflatten_clients(flat)

    # ------------------------------------------------------------------ helpers
    def _server_variate(self) -> dict[str, np.ndarray]:
        """c for the floating-point arrays of the current model (zeros if new)."""
        if self._x is None:
            raise RuntimeError("SCAFFOLD state used before configure_train")
        old = self.c_global or {}
        c = {
            k: old[k] if k in old and old[k].shape == v.shape else np.zeros(v.shape, v.dtype)
            for k, v in self._x.items()
            if np.issubdtype(v.dtype, np.floating)
        }
        self.c_global = c
        return c

    def _record(self, values: dict[str, np.ndarray]) -> ArrayRecord:
        if self._x is None:
            raise RuntimeError("SCAFFOLD state used before configure_train")
        return ArrayRecord(
            {k: Array(np.ascontiguousarray(v, dtype=self._x[k].dtype)) for k, v in values.items()}
        )


def client_messages(
    strategy: FedAvg,
    messages: list[Message],
    config: ConfigRecord,
    extra: Callable[[int], dict[str, ArrayRecord]],
) -> list[Message]:
    """One train message per client of FedAvg's `messages`, with its own records.

    Each keeps the round's shared arrays record (sent once per cohort by the grid),
    takes `config` as its config record and adds `extra(client id)`'s records.
    """
    arrays = messages[0].content[strategy.arrayrecord_key]
    out = []
    for msg in messages:
        cid = int(msg.metadata.dst_node_id)
        content = RecordDict(
            {strategy.arrayrecord_key: arrays, strategy.configrecord_key: config, **extra(cid)}
        )
        out.append(
            Message(content=content, dst_node_id=cid, message_type=msg.metadata.message_type)
        )
    return out


def flatten_clients(clients: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-client arrays as one flat dict "<client>/<parameter>" -> array (for checkpoints)."""
    return {f"{cid}/{k}": v for cid, arrays in clients.items() for k, v in arrays.items()}


def unflatten_clients(flat: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """The per-client arrays of a `flatten_clients` dict."""
    clients: dict[int, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        cid, _, name = key.partition("/")
        clients.setdefault(int(cid), {})[name] = np.asarray(value)
    return clients


def valid_replies(
    strategy: Any, replies: Iterable[Message]
) -> tuple[list[Message], dict[str, np.ndarray]] | None:
    """Replies without errors and the global arrays sent this round (None if no reply).

    Raises:
        RuntimeError: the strategy aggregates before it configured the round.
    """
    valid, _ = strategy._check_and_log_replies(list(replies), is_train=True)
    if not valid:
        return None
    if strategy._x is None:
        raise RuntimeError("aggregate_train called before configure_train")
    return valid, strategy._x


def reply_update(msg: Message, x: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """A reply's arrays (float64) and its local step count, checked against x."""
    cid = msg.metadata.src_node_id
    arrays = next(iter(msg.content.array_records.values()))
    missing = [k for k in x if k not in arrays]
    if missing:
        raise ValueError(f"client {cid}: reply lacks arrays {missing}")
    metrics = next(iter(msg.content.metric_records.values()))
    if LOCAL_STEPS_KEY not in metrics:
        raise ValueError(f"client {cid}: reply metrics lack {LOCAL_STEPS_KEY!r}")
    steps = int(metrics[LOCAL_STEPS_KEY])  # type: ignore[arg-type]
    return {k: arrays[k].numpy().astype(np.float64) for k in x}, steps


def cast_to(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the model's dtype (integer buffers are rounded, not truncated)."""
    if not np.issubdtype(dtype, np.floating):
        value = np.rint(value)
    return value.astype(dtype)
