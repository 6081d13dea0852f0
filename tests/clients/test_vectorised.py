"""The vectorised engine trains like the sequential one: same DP-SGD, same privacy events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fedsim.cli.progress import RunProgress
from fedsim.clients.cohort import ClientJob
from fedsim.clients.dp import LocalPlan, plan_participation
from fedsim.clients.engine import EngineError, choose_engine, vector_clients
from fedsim.clients.trainer import BatchSampler, LocalTrainer, build_global_model
from fedsim.clients.vectorised import VectorisedTrainer, _Client
from fedsim.clients.worker import WorkerState, load_scenario_data
from fedsim.engine.grid import cohort_size
from fedsim.engine.simulation import ServerRun, _server_loop
from fedsim.launch import client_side
from fedsim.protocol import CohortRequest
from fedsim.rundir import RunDir
from fedsim.seeding import torch_generator
from fedsim.shards import build_shards
from tests.conftest import small_scenario
from tests.test_grid import InProcessGrid


def _setup(sc):  # type: ignore[no-untyped-def]
    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    return bundle, shards, init


def _both(sc, configs=None):  # type: ignore[no-untyped-def]
    """Outcomes of every client of the scenario, sequential and vectorised."""
    bundle, shards, init = _setup(sc)
    jobs = [
        ClientJob(c, 1, shards.train[c], init, (configs or {}).get(c, {}))
        for c in range(sc.population)
    ]
    args = (sc, bundle.train, bundle.input_shape, bundle.num_classes)
    return LocalTrainer(*args).train_cohort(jobs), VectorisedTrainer(*args).train_cohort(jobs)


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)) for k in a)


@pytest.mark.parametrize("clip", [0.01, 1.0, 100.0])
def test_one_clipped_noiseless_step_equals_opacus_hooks(clip: float) -> None:
    sc = small_scenario(
        dp__noise_multiplier=0.0,
        dp__max_grad_norm=clip,
        dp__grad_sample_mode="hooks",
        train__max_steps=1,
    )
    seq, vec = _both(sc)
    _, _, init = _setup(sc)
    for s, v in zip(seq, vec, strict=True):
        for k in init:  # the update of the same Poisson batch (same seeded mask)
            du_s = s.result.state[k] - init[k]
            du_v = v.result.state[k] - init[k]
            torch.testing.assert_close(du_v, du_s, rtol=0.0, atol=1e-6)
        assert any(not torch.equal(s.result.state[k], init[k]) for k in init)


def test_noise_std_is_z_times_clip_per_client() -> None:
    sc = small_scenario()
    bundle, shards, init = _setup(sc)
    trainer = VectorisedTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    plans = [LocalPlan(4, 0.5, z, 0.5, 1e-5) for z in (0.5, 2.0)]
    clients = [
        _Client(
            job=ClientJob(c, 1, shards.train[c], init, {}),
            steps=1,
            fail_at=None,
            sampler=BatchSampler(shards.train[c], torch_generator(0, "b", c), 16, 0.5),
            plan=plan,
            noise_gen=torch_generator(1, "noise", c),
            expected_batch=4,
        )
        for c, plan in enumerate(plans)
    ]
    zeros = {k: torch.zeros(2, 3, *p.shape) for k, p in trainer.model.named_parameters()}
    draws = [trainer._privatise(zeros, torch.zeros(2, 3), clients) for _ in range(150)]
    for v, plan in enumerate(plans):
        flat = torch.cat([d[k][v].flatten() for d in draws for k in d])
        assert flat.numel() > 100_000
        want = plan.noise_multiplier * plan.max_grad_norm / 4  # std z*C, mean over E|B| = 4
        assert abs(float(flat.std()) / want - 1.0) < 0.01
        assert abs(float(flat.mean())) < 0.01 * want


def test_steps_reported_equal_steps_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = small_scenario(train__min_epochs=1, train__epochs=3, faults__fail_probability=0.3)
    taken: dict[int, int] = {}
    real_next = BatchSampler.next

    def counting(self: BatchSampler) -> torch.Tensor:
        client = self.client_id  # type: ignore[attr-defined]
        taken[client] = taken.get(client, 0) + 1
        return real_next(self)

    real_init = BatchSampler.__init__

    def tagging(self: BatchSampler, indices: Any, *args: Any) -> None:
        real_init(self, indices, *args)
        self.client_id = next(c for c, s in enumerate(shards.train) if s is indices)  # type: ignore[attr-defined]

    bundle, shards, init = _setup(sc)
    monkeypatch.setattr(BatchSampler, "next", counting)
    monkeypatch.setattr(BatchSampler, "__init__", tagging)
    trainer = VectorisedTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    jobs = [ClientJob(c, 1, shards.train[c], init, {}) for c in range(sc.population)]
    outcomes = trainer.train_cohort(jobs)
    assert {o.error is not None for o in outcomes} == {True, False}  # both kinds occur
    assert len({o.steps_done for o in outcomes}) > 1  # heterogeneous steps
    for o in outcomes:
        assert taken[o.client] == o.steps_done
        if o.result is not None:
            assert o.result.steps == o.steps_done


def _worker_outcomes(sc) -> list:  # type: ignore[no-untyped-def]
    state = WorkerState(sc)
    _, _, init = _setup(sc)
    from flwr.app import ArrayRecord

    req = CohortRequest(
        round=1,
        kind="train",
        scenario_json="",
        clients=list(range(sc.population)),
        layouts=[{"arrays": 0}] * sc.population,
        records=[ArrayRecord(init)],
    )
    return state, state.run_cohort(req)


def test_privacy_events_identical_to_sequential_engine() -> None:
    faults = dict(
        faults__fail_probability=0.3, faults__dropout_probability=0.2, faults__nan_probability=0.2
    )
    common = dict(train__min_epochs=1, train__epochs=3, population=10, **faults)
    seq_state, seq = _worker_outcomes(small_scenario(backend__engine="sequential", **common))
    vec_state, vec = _worker_outcomes(small_scenario(backend__engine="vectorised", **common))
    assert isinstance(seq_state.trainer, LocalTrainer)
    assert isinstance(vec_state.trainer, VectorisedTrainer)
    assert len({o.error for o in seq}) > 2  # trained, dropped, failed and rejected occur
    for s, v in zip(seq, vec, strict=True):
        assert (s.client, s.privacy, s.error, s.steps_before_error, s.extra) == (
            v.client,
            v.privacy,
            v.error,
            v.steps_before_error,
            v.extra,
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"dp__mode": "off"},
        {"dp__mode": "off", "train__momentum": 0.9, "train__epochs": 2},
        {"dp__mode": "off", "train__optimizer": "adam", "train__lr": 0.01, "train__min_epochs": 1,
         "train__epochs": 3},
        {"dp__noise_multiplier": 1.0, "dp__grad_sample_mode": "hooks", "train__momentum": 0.5},
        {"dp__noise_multiplier": 1.0, "dp__grad_sample_mode": "ghost"},
    ],
)  # fmt: skip
def test_round_agrees_with_sequential_engine(overrides: dict[str, Any]) -> None:
    """Same batches, same noise (same generators): weights agree to float rounding."""
    sc = small_scenario(**overrides)
    _, shards, init = _setup(sc)
    corr = {k: torch.full_like(t, 0.01) for k, t in init.items()}
    configs = {1: {"proximal-mu": 0.5}, 2: {"proximal-mu": 0.1, "correction": corr}}
    seq, vec = _both(sc, configs)
    for s, v in zip(seq, vec, strict=True):
        assert s.result.steps == v.result.steps
        assert s.result.plan == v.result.plan
        assert _max_rel_diff(s.result.state, v.result.state) <= 1e-5
        assert abs(s.result.train_loss - v.result.train_loss) <= 1e-5 * abs(s.result.train_loss)


def test_fedprox_and_scaffold_change_the_vectorised_update() -> None:
    sc = small_scenario(dp__mode="off")
    _, _, init = _setup(sc)
    corr = {k: torch.full_like(t, 0.05) for k, t in init.items()}
    _, plain = _both(sc)
    _, shaped = _both(sc, {0: {"proximal-mu": 5.0}, 1: {"correction": corr}})
    assert _max_rel_diff(plain[0].result.state, shaped[0].result.state) > 1e-3
    assert _max_rel_diff(plain[1].result.state, shaped[1].result.state) > 1e-3
    assert _max_rel_diff(plain[2].result.state, shaped[2].result.state) == 0.0


def test_chunks_hold_the_same_clients_whatever_k() -> None:
    """Cohorts of any K are multiples of the chunk: a chunk's result is bit-identical."""
    sc = small_scenario(population=12, backend__vector_clients=4, train__min_epochs=1)
    bundle, shards, init = _setup(sc)
    trainer = VectorisedTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    assert trainer.chunk_size == 4
    jobs = [ClientJob(c, 2, shards.train[c], init, {}) for c in range(12)]
    whole = trainer.train_cohort(jobs)
    for k_setting in (1, 3, 5, "auto"):
        k = cohort_size(12, 2, k_setting, chunk=4)
        assert k % 4 == 0
        parts = [o for i in range(0, 12, k) for o in trainer.train_cohort(jobs[i : i + k])]
        for a, b in zip(whole, parts, strict=True):
            assert all(torch.equal(a.result.state[n], b.result.state[n]) for n in init)


class _WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).flatten(1))


def test_auto_engine_falls_back_for_batchnorm_with_the_reason() -> None:
    sc = small_scenario()
    bundle, _, _ = _setup(sc)
    cnn = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    assert choose_engine(sc, cnn, bundle.train).engine == "vectorised"
    bn = _WithBatchNorm()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    choice = choose_engine(sc, bn, bundle.train)
    assert choice.engine == "sequential" and choice.vector_clients is None
    assert "probe failed" in choice.reason
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())  # untouched
    with pytest.raises(EngineError, match="fails the vmap probe.*'sequential' or 'auto'"):
        choose_engine(small_scenario(backend__engine="vectorised"), bn, bundle.train)
    forced = choose_engine(small_scenario(backend__engine="sequential"), cnn, bundle.train)
    assert forced.engine == "sequential"


def test_vector_clients_from_model_size_or_setting() -> None:
    sc = small_scenario()
    bundle, _, _ = _setup(sc)
    small = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    assert vector_clients(sc, small) == 32  # a 1k-parameter CNN: the cap
    big = nn.Linear(4000, 1000)  # 4M parameters x (6 + 32) copies x 4 bytes: 1 fits in 1 GiB
    assert vector_clients(sc, big) == 1
    assert vector_clients(small_scenario(backend__vector_clients=5), big) == 5


def _serve(tmp_path: Path, name: str = "", **overrides: Any) -> tuple[ServerRun, int]:
    """A run over in-process cohorts: its state and how many cohort messages it sent."""
    sc = small_scenario(**{"rounds": 1, **overrides})
    rundir = RunDir(tmp_path / (name or sc.backend.engine))
    rundir.create()
    rundir.write_text(rundir.scenario, sc.to_toml())
    state = ServerRun(sc, rundir, RunProgress(sc, enabled=False), clients=client_side())
    inner = InProcessGrid(nodes=8)
    try:
        _server_loop(inner, sc, state)
    finally:
        state.close()
    return state, len(inner.sent)


@pytest.mark.parametrize("dp_mode", ["off", "sample"])
def test_a_round_of_both_engines_agrees_and_the_summary_says_which(
    tmp_path: Path, flower_run_context: Any, dp_mode: str
) -> None:
    vec, _ = _serve(tmp_path, dp__mode=dp_mode, backend__engine="auto")
    seq, _ = _serve(tmp_path, dp__mode=dp_mode, backend__engine="sequential")
    assert _max_rel_diff(seq.final_state, vec.final_state) <= 1e-5
    assert vec.summary(0.0)["engine"] == "vectorised"
    assert vec.summary(0.0)["vector_clients"] == 32
    assert vec.summary(0.0)["engine_reason"] == "the model passed the probe"
    assert seq.summary(0.0)["engine"] == "sequential"
    assert seq.summary(0.0)["vector_clients"] is None


def test_vectorised_round_is_bit_identical_whatever_k(
    tmp_path: Path, flower_run_context: Any
) -> None:
    """K = 1 and K = auto send different cohorts; the chunks, and the weights, are equal."""
    common = dict(rounds=2, backend__workers=1, backend__vector_clients=2)
    one, sent_one = _serve(tmp_path, "k1", backend__clients_per_message=1, **common)
    auto, sent_auto = _serve(tmp_path, "auto", backend__clients_per_message="auto", **common)
    assert one.summary(0.0)["engine"] == auto.summary(0.0)["engine"] == "vectorised"
    assert sent_one > sent_auto  # K = 1 became K = V = 2: two cohorts a round, not one
    for k, t in one.final_state.items():
        assert torch.equal(t, auto.final_state[k]), k


def test_reported_events_are_what_privatise_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    sc = small_scenario(train__min_epochs=1, train__epochs=3, faults__fail_probability=0.3)
    bundle, shards, init = _setup(sc)
    trainer = VectorisedTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    applied: dict[int, list[float]] = {}
    real_privatise = VectorisedTrainer._privatise
    real_client = VectorisedTrainer._client

    def privatise(self: VectorisedTrainer, per_ex: Any, w: Any, clients: list) -> Any:
        for c in clients:
            applied.setdefault(c.job.client, []).append(c.plan.noise_multiplier)
        return real_privatise(self, per_ex, w, clients)

    def client(self: VectorisedTrainer, job: ClientJob) -> _Client:
        c = real_client(self, job)
        if job.client == 2:  # configured otherwise than planned
            c.plan = dataclasses.replace(c.plan, noise_multiplier=0.3, max_grad_norm=2.0)
        return c

    monkeypatch.setattr(VectorisedTrainer, "_privatise", privatise)
    monkeypatch.setattr(VectorisedTrainer, "_client", client)
    jobs = [ClientJob(c, 1, shards.train[c], init, {}) for c in range(sc.population)]
    outcomes = trainer.train_cohort(jobs)
    assert {o.error is not None for o in outcomes} == {True, False}  # both kinds occur
    for o in outcomes:
        plan = plan_participation(sc, len(shards.train[o.client]))
        assert o.event is not None and o.event.steps == len(applied[o.client]) == o.steps_done
        if o.client == 2:
            assert (o.event.noise_multiplier, o.event.max_grad_norm) == (0.3, 2.0)
            assert o.event.sample_rate == plan.sample_rate
        else:
            assert o.event == plan.event(o.steps_done)
