"""Client shards: which training indices each virtual client owns.

Shards are index arrays into the one dataset a process loaded, never copies. The
server and every worker compute them from the scenario alone, so they agree
without sending data around.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.canaries import CanaryDataset, add_to_shards
from fedsim.canaries import canary_plan as make_canary_plan
from fedsim.config import OWN_PARTITIONS, Scenario
from fedsim.data import DatasetBundle, flwr_partition, load_dataset, partition_indices
from fedsim.seeding import numpy_rng


@dataclass(frozen=True)
class Shards:
    """Per-client train indices and, with federated evaluation, held-out indices."""

    train: list[np.ndarray]
    holdout: list[np.ndarray]

    def sizes(self) -> np.ndarray:
        return np.array([len(s) for s in self.train], dtype=np.int64)


def load_scenario_data(scenario: Scenario) -> DatasetBundle:
    """The scenario's dataset (cached per process by fedsim.data), validation split, canaries."""
    bundle = load_dataset(
        scenario.data.name,
        seed=scenario.seed,
        **scenario.data.loader_options(scenario.population),
    )
    if scenario.data.validation_fraction > 0:
        from fedsim.data.validation import with_validation

        bundle = with_validation(bundle, scenario.data.validation_fraction, scenario.seed)
    if scenario.audit.canaries:
        from fedsim.canaries import with_canaries

        bundle = with_canaries(bundle, scenario.audit.canaries, scenario.seed)
    return bundle


def build_shards(scenario: Scenario, bundle: DatasetBundle) -> Shards:
    """Partition the training set over the population, as the scenario says.

    With federated evaluation on, each client keeps `evaluation.client_holdout` of its
    shard (a seeded choice, at least one sample) for evaluating the global model.
    """
    data = scenario.data
    train_set = bundle.train
    canary_plan = None
    if isinstance(train_set, CanaryDataset):
        # Canaries are not data to partition: they go to their seeded owners below.
        canary_plan = make_canary_plan(
            scenario.audit.canaries, scenario.population, len(train_set.base), scenario.seed
        )
        train_set = train_set.base
    if data.partition in OWN_PARTITIONS and data.partition_backend == "fedsim":
        parts = partition_indices(
            train_set,
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
            train_set,
            method=data.partition,
            num_clients=scenario.population,
            seed=scenario.seed,
            **options,
        )
    if scenario.evaluation.federated_fraction <= 0.0:
        train = parts if canary_plan is None else add_to_shards(parts, canary_plan)
        return Shards(train=train, holdout=[np.empty(0, dtype=np.int64)] * len(parts))
    train, holdout = [], []
    for cid, part in enumerate(parts):
        rng = numpy_rng(scenario.seed, "holdout", cid)
        n_out = min(len(part) - 1, max(1, round(len(part) * scenario.evaluation.client_holdout)))
        perm = rng.permutation(len(part))
        holdout.append(np.sort(part[perm[:n_out]]))
        train.append(np.sort(part[perm[n_out:]]))
    if canary_plan is not None:
        train = add_to_shards(train, canary_plan)
    return Shards(train=train, holdout=holdout)
