"""Client shards: which training indices each virtual client owns.

Shards are index arrays into the one dataset a process loaded, never copies. The
server and every worker compute them from the scenario alone, so they agree
without sending data around.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.config import OWN_PARTITIONS, Scenario
from fedsim.data import DatasetBundle, flwr_partition, partition_indices
from fedsim.seeding import numpy_rng


@dataclass(frozen=True)
class Shards:
    """Per-client train indices and, with federated evaluation, held-out indices."""

    train: list[np.ndarray]
    holdout: list[np.ndarray]

    def sizes(self) -> np.ndarray:
        return np.array([len(s) for s in self.train], dtype=np.int64)


def build_shards(scenario: Scenario, bundle: DatasetBundle) -> Shards:
    """Partition the training set over the population, as the scenario says.

    With federated evaluation on, each client keeps `evaluation.client_holdout` of its
    shard (a seeded choice, at least one sample) for evaluating the global model.
    """
    data = scenario.data
    if data.partition in OWN_PARTITIONS and data.partition_backend == "fedsim":
        parts = partition_indices(
            bundle.train,
            method=data.partition,
            num_clients=scenario.population,
            seed=scenario.seed,
            alpha=data.alpha,
            min_size=data.min_partition_size,
        )
    else:
        options = dict(data.partition_options)
        if data.partition == "dirichlet":
            options.setdefault("alpha", data.alpha)
            options.setdefault("min_partition_size", data.min_partition_size)
        parts = flwr_partition(
            bundle.train,
            method=data.partition,
            num_clients=scenario.population,
            seed=scenario.seed,
            **options,
        )
    if scenario.evaluation.federated_fraction <= 0.0:
        return Shards(train=parts, holdout=[np.empty(0, dtype=np.int64)] * len(parts))
    train, holdout = [], []
    for cid, part in enumerate(parts):
        rng = numpy_rng(scenario.seed, "holdout", cid)
        n_out = min(len(part) - 1, max(1, round(len(part) * scenario.evaluation.client_holdout)))
        perm = rng.permutation(len(part))
        holdout.append(np.sort(part[perm[:n_out]]))
        train.append(np.sort(part[perm[n_out:]]))
    return Shards(train=train, holdout=holdout)
