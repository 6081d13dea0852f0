"""dp.secure_rng: the sampling is secret too, not only the noise.

Amplification by subsampling assumes the adversary does not know who was sampled;
with a seed in scenario.toml, seeded batch masks and cohorts are known to whoever
holds the run directory. Two secure_rng runs with the same seed must differ in
their DP-SGD batches and in their Poisson client cohorts (and count noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from fedsim.clients.trainer import LocalTrainer, build_global_model
from fedsim.clients.worker import load_scenario_data
from fedsim.shards import build_shards
from fedsim.strategies.dp_fedavg import AdaptiveClipping, DPFedAvg
from tests.conftest import small_scenario
from tests.strategies.test_dp_fedavg import Nodes, reply


def _batches(secure: bool) -> list[list[list[int]]]:
    """The DP-SGD batches of client 0, round 1, in two trainings with the same seed."""
    sc = small_scenario(dp__secure_rng=secure)
    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    out = []
    for _ in range(2):
        trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
        seen: list[list[int]] = []
        step = trainer._step

        def spy(batch_idx: torch.Tensor, step: Any = step, seen: list = seen) -> Any:
            seen.append(sorted(batch_idx.tolist()))
            return step(batch_idx)

        trainer._step = spy  # type: ignore[method-assign]
        trainer.train(client=0, round=1, indices=shards.train[0], global_state=init)
        out.append(seen)
    return out


@pytest.mark.parametrize("secure", [False, True])
def test_batch_masks_are_secret_with_secure_rng(secure: bool) -> None:
    first, second = _batches(secure)
    assert len(first) == len(second) > 1
    # seeded: the same masks (reproducible); secure: fresh masks, unknown to the seed's holder
    assert (first != second) is secure


def _cohort_and_count(secure: bool, seed: int = 7) -> tuple[list[int], float]:
    strategy = DPFedAvg(
        FedAvg(),
        population=1000,
        noise_multiplier=1.0,
        clip_norm=1.0,
        sampling="poisson",
        clients_per_round=100,
        seed=seed,
        secure_rng=secure,
        adaptive=AdaptiveClipping(count_stddev=5.0),
    )
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes(1000)))
    strategy.aggregate_train(1, [reply(m, {"w": np.array([0.1, 0.0])}) for m in msgs])
    release = strategy.releases[-1]
    assert release.noised_unclipped_fraction is not None
    return release.clients, release.noised_unclipped_fraction


@pytest.mark.parametrize("secure", [False, True])
def test_poisson_cohorts_and_count_noise_are_secret_with_secure_rng(
    secure: bool, flower_run_context: Any
) -> None:
    (cohort_a, count_a), (cohort_b, count_b) = _cohort_and_count(secure), _cohort_and_count(secure)
    # the cohort is what the ledger line lists as "clients"
    assert (cohort_a != cohort_b) is secure
    assert (count_a != count_b) is secure
