"""Local trainer: cached model reuse is invisible, DP plan is followed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
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


def _jobs(sc, shards, init, clients):  # type: ignore[no-untyped-def]
    from fedsim.clients.cohort import ClientJob

    return [ClientJob(c, 1, shards.train[c], init, {}) for c in clients]


def test_reported_event_is_what_the_optimizer_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = small_scenario(train__epochs=2, faults__fail_probability=0.5)
    trainer, shards, init = make(sc)
    steps_run: list[int] = []
    real_step = trainer.optimizer.step

    def counting_step(*args: object, **kwargs: object) -> object:
        steps_run[-1] += 1
        return real_step(*args, **kwargs)

    real_configure = LocalTrainer._configure_dp

    def configure(self: LocalTrainer, plan: Any, n: int, client: int, rnd: int) -> None:
        real_configure(self, plan, n, client, rnd)
        steps_run.append(0)
        if client == 1:  # configured otherwise than planned
            self.optimizer.noise_multiplier = 0.25  # type: ignore[attr-defined]
            self.optimizer.max_grad_norm = 3.0  # type: ignore[attr-defined]

    monkeypatch.setattr(trainer.optimizer, "step", counting_step)
    monkeypatch.setattr(LocalTrainer, "_configure_dp", configure)
    outcomes = trainer.train_cohort(_jobs(sc, shards, init, range(sc.population)))
    assert {o.error is None for o in outcomes} == {True, False}  # some fail midway
    for o, run in zip(outcomes, steps_run, strict=True):
        plan = plan_participation(sc, len(shards.train[o.client]))
        assert o.event is not None and o.event.steps == run == o.steps_done
        if o.client == 1:
            assert (o.event.noise_multiplier, o.event.max_grad_norm) == (0.25, 3.0)
            assert o.event.sample_rate == plan.sample_rate
        else:
            assert o.event == plan.event(run)


def test_noise_changed_within_a_participation_fails_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sc = small_scenario(train__epochs=2)
    trainer, shards, init = make(sc)
    real = LocalTrainer._step

    def step(self: LocalTrainer, batch: torch.Tensor) -> float | None:
        out = real(self, batch)
        self.optimizer.noise_multiplier = 0.5  # type: ignore[attr-defined]
        return out

    monkeypatch.setattr(LocalTrainer, "_step", step)
    (outcome,) = trainer.train_cohort(_jobs(sc, shards, init, [0]))
    assert isinstance(outcome.error, RuntimeError) and "changed" in str(outcome.error)
    # the step that ran at the planned noise is reported, at the planned noise
    plan = plan_participation(sc, len(shards.train[0]))
    assert outcome.event == plan.event(1)


def test_without_dp_no_event() -> None:
    sc = small_scenario(dp__mode="off")
    trainer, shards, init = make(sc)
    (outcome,) = trainer.train_cohort(_jobs(sc, shards, init, [0]))
    assert outcome.result is not None and outcome.event is None
