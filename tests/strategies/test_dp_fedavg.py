"""DP-FedAvg: one aggregation step by hand, Poisson sampling as accounted, noise split."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedsim.privacy import PrivacyLedger, epsilon
from fedsim.strategies.dp_fedavg import (
    AdaptiveClipping,
    DPFedAvg,
    joint_noise_multiplier,
    split_noise,
)


class Nodes:
    """The part of a Grid a strategy's configure_train uses."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(self.n))


def reply(to: Message, update: dict[str, np.ndarray], loss: float = 1.0) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v.astype(np.float32)) for k, v in update.items()}),
            "metrics": MetricRecord({"num-examples": 10, "train_loss": loss}),
        }
    )
    return Message(content, reply_to=to)


def make(sampling: str = "poisson", z: float = 0.0, **kw: Any) -> DPFedAvg:
    return DPFedAvg(
        FedAvg(fraction_train=0.5, min_train_nodes=2, min_available_nodes=2),
        population=4,
        noise_multiplier=z,
        clip_norm=1.0,
        sampling=sampling,
        clients_per_round=2,
        seed=0,
        **kw,
    )


def test_clip_and_equal_weight_average_by_hand(flower_run_context: Any) -> None:
    strategy = make("fixed")
    glob = {"w": np.zeros(2, dtype=np.float32)}
    msgs = list(
        strategy.configure_train(1, ArrayRecord({"w": Array(glob["w"])}), ConfigRecord(), Nodes(4))
    )
    assert len(msgs) == 2
    # client A moved by (3, 4): norm 5, clipped to (0.6, 0.8); client B by (0.1, 0): kept
    replies = [
        reply(msgs[0], {"w": np.array([3.0, 4.0])}),
        reply(msgs[1], {"w": np.array([0.1, 0.0])}),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    got = arrays["w"].numpy()
    np.testing.assert_allclose(got, [(0.6 + 0.1) / 2, (0.8 + 0.0) / 2], rtol=1e-6)
    assert strategy.releases[-1].unclipped_fraction == 0.5
    assert strategy.releases[-1].sample_rate == 1.0  # fixed-size: no amplification


def test_noise_std_is_z_times_clip_over_expected_clients(flower_run_context: Any) -> None:
    strategy = make("fixed", z=2.0)
    big = np.zeros(20000, dtype=np.float32)
    msgs = list(
        strategy.configure_train(1, ArrayRecord({"w": Array(big)}), ConfigRecord(), Nodes(4))
    )
    arrays, _ = strategy.aggregate_train(1, [])  # no replies: the noise is still released
    noise = arrays["w"].numpy()
    # std of the average = z * C / expected clients = 2 * 1 / 2
    assert noise.std() == pytest.approx(1.0, rel=0.03)
    assert len(msgs) == 2


def test_poisson_sampling_realised_rate_matches_accounted(flower_run_context: Any) -> None:
    strategy = DPFedAvg(
        FedAvg(),
        population=1000,
        noise_multiplier=1.0,
        clip_norm=1.0,
        sampling="poisson",
        clients_per_round=100,
        seed=5,
    )
    arrays = ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))})
    sizes = []
    for rnd in range(1, 41):
        msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), Nodes(1000)))
        sizes.append(len(msgs))
        strategy.aggregate_train(rnd, [])
    q = strategy.sample_rate
    assert q == 0.1
    mean = np.mean(sizes) / 1000
    # 40 rounds x 1000 Bernoulli(0.1): std of the mean rate = sqrt(q(1-q)/40000) = 0.0015
    assert abs(mean - q) < 4 * math.sqrt(q * (1 - q) / 40000)
    assert len(set(sizes)) > 5  # cohort sizes vary: it is not fixed-size sampling
    # same seed and round -> same cohort
    again = [
        m.metadata.dst_node_id
        for m in strategy.configure_train(3, arrays, ConfigRecord(), Nodes(1000))
    ]
    assert sorted(again) == strategy._sampled


def test_adaptive_clipping_moves_towards_quantile(flower_run_context: Any) -> None:
    # negligible noise on both the update and the unclipped count
    strategy = make(
        "fixed", z=1e-9, adaptive=AdaptiveClipping(count_stddev=1e-9, learning_rate=0.5)
    )
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes(4)))
    # both updates unclipped (norm 0.1 < 1): b = 1 > 0.5, the bound shrinks by e^{-0.25}
    strategy.aggregate_train(1, [reply(m, {"w": np.array([0.1, 0.0])}) for m in msgs])
    assert strategy.clip_norm == pytest.approx(math.exp(-0.5 * (1.0 - 0.5)), rel=1e-6)


def test_split_noise_matches_paper_and_refuses_too_little_count_noise() -> None:
    z_delta = split_noise(1.0, 2.0)
    assert (z_delta**-2 + (2 * 2.0) ** -2) ** -0.5 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="must exceed the noise multiplier"):
        split_noise(2.0, 0.5)


def test_ledger_user_releases_compose_like_the_accountant(tmp_path: Any) -> None:
    ledger = PrivacyLedger(tmp_path / "l.jsonl", delta=1e-5)
    for rnd in range(1, 6):
        eps = ledger.record_user(
            round=rnd,
            noise_multiplier=1.1,
            sample_rate=0.05,
            clip_norm=1.0,
            sampling="poisson",
            clients=[1, 2],
        )
    assert eps == pytest.approx(
        epsilon(noise_multiplier=1.1, sample_rate=0.05, steps=5, delta=1e-5)
    )
    assert ledger.user_epsilon_of(99) == ledger.user_epsilon()  # amplified: covers everyone
    with pytest.raises(ValueError, match="without amplification"):
        ledger.record_user(
            round=6,
            noise_multiplier=1.1,
            sample_rate=0.05,
            clip_norm=1.0,
            sampling="fixed",
            clients=[1],
        )
    ledger.close()
    again = PrivacyLedger.load(tmp_path / "l.jsonl")
    assert again.user_epsilon() == pytest.approx(eps)


def test_fixed_sampling_user_epsilon_counts_only_participations(tmp_path: Any) -> None:
    ledger = PrivacyLedger(None, delta=1e-5)
    ledger.record_user(
        round=1,
        noise_multiplier=2.0,
        sample_rate=1.0,
        clip_norm=1.0,
        sampling="fixed",
        clients=[0, 1],
    )
    ledger.record_user(
        round=2,
        noise_multiplier=2.0,
        sample_rate=1.0,
        clip_norm=1.0,
        sampling="fixed",
        clients=[1, 2],
    )
    one = epsilon(noise_multiplier=2.0, sample_rate=1.0, steps=1, delta=1e-5)
    two = epsilon(noise_multiplier=2.0, sample_rate=1.0, steps=2, delta=1e-5)
    assert ledger.user_epsilon_of(0) == pytest.approx(one)
    assert ledger.user_epsilon_of(1) == pytest.approx(two)
    assert ledger.user_epsilon_of(3) == 0.0


class _NoNoise:
    """A noise generator that adds nothing, so a release shows its exact arguments."""

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        return np.zeros(size) if size is not None else 0.0


def _adaptive_release(updates: list[np.ndarray]) -> tuple[DPFedAvg, np.ndarray, float]:
    """One noiseless adaptive-clipping round over ``updates``: (strategy, sum, count).

    The clipped sum is read back from the new model (sum = (new - old) * D) and the
    count argument from the clip update: noisy_b = target - log(C'/C) / lr, released
    with noise std count_stddev / D, so its argument in count units is noisy_b * D.
    """
    lr = 0.5
    strategy = make("fixed", z=1.0, adaptive=AdaptiveClipping(count_stddev=2.0, learning_rate=lr))
    strategy._noise_rng = lambda rnd: _NoNoise()  # type: ignore[method-assign]
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes(4)))
    clip = strategy.clip_norm
    new, _ = strategy.aggregate_train(
        1, [reply(m, {"w": u}) for m, u in zip(msgs, updates, strict=False)]
    )
    total = new["w"].numpy().astype(np.float64) * strategy.expected_clients
    noisy_b = 0.5 - math.log(strategy.clip_norm / clip) / lr
    return strategy, total, noisy_b * strategy.expected_clients


def test_adaptive_clipping_joint_sensitivity_matches_recorded_multiplier(
    flower_run_context: Any,
) -> None:
    # Neighbouring cohorts: B adds one client whose update sits at the clip norm (1.0),
    # unclipped, the worst case for sum and count together (Andrew et al. 2021, Thm 1).
    one = np.array([0.3, 0.0])
    added = np.array([0.0, 1.0])
    a, sum_a, count_a = _adaptive_release([one])
    b, sum_b, count_b = _adaptive_release([one, added])
    d_sum = float(np.linalg.norm(sum_b - sum_a))
    d_count = abs(count_b - count_a)
    assert d_sum == pytest.approx(1.0, rel=1e-6)
    z_delta, sigma_b = b.update_noise_multiplier, b.count_stddev
    joint = math.sqrt((d_sum / (z_delta * 1.0)) ** 2 + (d_count / sigma_b) ** 2)
    z_recorded = b.releases[-1].noise_multiplier
    assert joint == pytest.approx(1.0 / z_recorded, rel=1e-6)
    assert a.releases[-1].noise_multiplier == z_recorded


def test_adaptive_release_ledger_fields_hold_only_noised_count(flower_run_context: Any) -> None:
    strategy = make("fixed", z=1.0, adaptive=AdaptiveClipping(count_stddev=2.0))
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes(4)))
    strategy.aggregate_train(1, [reply(m, {"w": np.array([0.1, 0.0])}) for m in msgs])
    release = strategy.releases[-1]
    fields = release.ledger_fields()
    assert "unclipped_fraction" not in fields  # the raw fraction stays with the curator
    assert set(fields) == {
        "clip_sum_noise_multiplier",
        "count_noise_std",
        "count_sensitivity",
        "noised_unclipped_fraction",
    }
    assert fields["count_sensitivity"] == 0.5 and fields["count_noise_std"] == 2.0
    joint = joint_noise_multiplier(
        fields["clip_sum_noise_multiplier"], fields["count_noise_std"], fields["count_sensitivity"]
    )
    assert joint == pytest.approx(release.noise_multiplier, rel=1e-12)
    # both clients unclipped: the noised fraction is 1 + N(0, (2 / D)^2), D = 2
    assert fields["noised_unclipped_fraction"] != release.unclipped_fraction == 1.0
    assert abs(fields["noised_unclipped_fraction"] - 1.0) < 5 * 2.0 / 2
