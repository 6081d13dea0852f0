"""Local trainer: cached model reuse is invisible, DP plan is followed."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.clients.dp import plan_participation
from fedsim.clients.trainer import LocalTrainer, build_global_model
from fedsim.clients.worker import load_scenario_data
from fedsim.shards import build_shards
from tests.conftest import small_scenario


def make(sc):  # type: ignore[no-untyped-def]
    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    return trainer, shards, init


def test_reusing_one_trainer_equals_fresh_trainers() -> None:
    sc = small_scenario(train__optimizer="adam", train__lr=0.01)
    trainer, shards, init = make(sc)
    trainer.train(client=0, round=1, indices=shards.train[0], global_state=init)
    reused = trainer.train(client=1, round=1, indices=shards.train[1], global_state=init)
    fresh_trainer, _, _ = make(sc)
    fresh = fresh_trainer.train(client=1, round=1, indices=shards.train[1], global_state=init)
    for key in reused.state:
        assert torch.equal(reused.state[key], fresh.state[key]), key


def test_dp_training_follows_plan_and_changes_weights() -> None:
    sc = small_scenario(train__epochs=2)
    trainer, shards, init = make(sc)
    res = trainer.train(client=2, round=1, indices=shards.train[2], global_state=init)
    plan = plan_participation(sc, len(shards.train[2]))
    assert res.plan == plan
    assert res.steps == plan.steps == 2 * int(np.ceil(len(shards.train[2]) / 16))
    assert abs(plan.sample_rate - 16 / len(shards.train[2])) < 1e-12
    assert any(not torch.equal(res.state[k], init[k]) for k in init)


def test_noise_is_seeded_per_round_and_client() -> None:
    sc = small_scenario()
    trainer, shards, init = make(sc)
    a = trainer.train(client=0, round=1, indices=shards.train[0], global_state=init).state
    b = trainer.train(client=0, round=1, indices=shards.train[0], global_state=init).state
    c = trainer.train(client=0, round=2, indices=shards.train[0], global_state=init).state
    key = next(iter(a))
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


def test_without_dp_no_plan() -> None:
    sc = small_scenario(dp__mode="off")
    trainer, shards, init = make(sc)
    res = trainer.train(client=0, round=1, indices=shards.train[0], global_state=init)
    assert res.plan is None and res.steps == int(np.ceil(len(shards.train[0]) / 16))
    assert np.isfinite(res.train_loss)


def test_target_epsilon_plan_never_exceeds_target_over_all_rounds() -> None:
    from fedsim.privacy import epsilon

    sc = small_scenario(dp__noise_multiplier=None, dp__target_epsilon=2.0, rounds=5)
    plan = plan_participation(sc, 200)
    eps = epsilon(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps * sc.rounds,
        delta=sc.dp.delta,
    )
    assert 1.9 < eps <= 2.0
