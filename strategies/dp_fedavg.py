"""User-level DP-FedAvg: clip each client's update, add Gaussian noise to the sum.

McMahan et al. 2018 ("Learning Differentially Private Recurrent Language Models")
with optional adaptive clipping (Andrew et al. 2021, "Differentially Private
Learning with Adaptive Clipping"). One private release per round:

    new = global + (sum_i clip(delta_i, C) + N(0, (z_delta * C)^2 I)) / D

with equal client weights (weighting by num-examples would change the
sensitivity), and D the expected number of clients (q * N under Poisson sampling,
m under fixed-size sampling), fixed in advance so it reveals nothing.

Client sampling is what the accountant assumes: with `sampling="poisson"` every
available client joins a round independently with probability q (done here, since
Flower's strategies sample a fixed number with `random.sample`) and each release
is accounted with amplification at q; with `sampling="fixed"` Flower's sampling is
used and releases are accounted without amplification (q = 1), per client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedsim.seeding import dp_numpy_rng, numpy_rng


@dataclass
class AdaptiveClipping:
    """Geometric update of the clip norm towards a quantile of update norms.

    C <- C * exp(-lr * (b - quantile)), b = noisy fraction of unclipped clients.

    The count is released as sum_i (b_i - 1/2) + N(0, count_stddev^2), b_i = 1 when
    client i's update was not clipped: each client moves it by exactly 1/2
    (:data:`COUNT_SENSITIVITY`), the sensitivity Andrew et al.'s joint noise
    multiplier assumes (TF-Privacy's QuantileEstimatorQuery shifts the same way).
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_stddev: float | None = None  # default: expected clients / 20 (paper)


#: Add/remove sensitivity of the shifted unclipped count sum_i (b_i - 1/2).
COUNT_SENSITIVITY = 0.5


@dataclass
class Release:
    """What one round released, for the ledger.

    ``noise_multiplier`` is the effective (joint) multiplier the accountant composes;
    with adaptive clipping it combines ``clip_sum_noise_multiplier`` (the sum's
    noise std / C) and the count's noise std / sensitivity. ``unclipped_fraction`` is
    the raw fraction, kept on the curator's side (never written to the ledger);
    ``noised_unclipped_fraction`` is what the count release made public.
    """

    round: int
    noise_multiplier: float
    sample_rate: float
    clip_norm: float
    sampling: str
    clients: list[int]
    unclipped_fraction: float | None
    clip_sum_noise_multiplier: float | None = None
    count_noise_std: float | None = None
    count_sensitivity: float | None = None
    noised_unclipped_fraction: float | None = None

    def ledger_fields(self) -> dict[str, Any]:
        """The extra fields of this release's ledger line: only released quantities."""
        out: dict[str, Any] = {"clip_sum_noise_multiplier": self.clip_sum_noise_multiplier}
        if self.count_noise_std is not None:
            out["count_noise_std"] = self.count_noise_std
            out["count_sensitivity"] = self.count_sensitivity
            out["noised_unclipped_fraction"] = self.noised_unclipped_fraction
        return out


class ReleaseAccountant(Protocol):
    """Where DP-FedAvg records its releases (`fedsim.privacy.accounting.PrivacyAccounting`)."""

    def use_releases(self, *, noise_multiplier: float, sample_rate: float, sampling: str) -> None:
        """Told once: the mechanism every release uses (for budget checks)."""

    def record_release(
        self,
        *,
        round: int,
        noise_multiplier: float,
        sample_rate: float,
        clip_norm: float,
        sampling: str,
        clients: list[int],
        **extra: Any,
    ) -> None:
        """Told after each round: what that round released."""


class DPFedAvg(Strategy):
    """User-level DP around FedAvg's messaging, with equal weights.

    Args:
        inner: the FedAvg (or subclass) whose configure/evaluate steps are used for
            fixed-size sampling and for evaluation.
        population: number of virtual clients.
        noise_multiplier: z, noise std / clip norm of the sum (the accounted value).
        clip_norm: initial clip norm C of a client's update (L2 over all arrays).
        sampling: "poisson" (amplified accounting) or "fixed" (no amplification).
        clients_per_round: expected (poisson) or exact (fixed) clients per round.
        seed: for the canary directions and, unless `secure_rng`, the Poisson
            cohorts and the noise.
        secure_rng: draw cohorts, the sum's noise and the count's noise from OS
            entropy each round (secret sampling and noise).
        adaptive: adaptive clipping settings, or None for fixed clipping.
        canaries: canary clients of the one-shot audit (0: none).
        accounting: where each round's release is recorded (the run's
            PrivacyAccounting); None keeps them in `releases` only.
    """

    def __init__(
        self,
        inner: FedAvg,
        *,
        population: int,
        noise_multiplier: float,
        clip_norm: float,
        sampling: str,
        clients_per_round: int,
        seed: int,
        secure_rng: bool = False,
        adaptive: AdaptiveClipping | None = None,
        canaries: int = 0,
        accounting: ReleaseAccountant | None = None,
    ) -> None:
        if sampling not in ("poisson", "fixed"):
            raise ValueError(f"sampling must be 'poisson' or 'fixed', got {sampling!r}")
        self.inner = inner
        self.population = population
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.sampling = sampling
        self.expected_clients = float(clients_per_round)
        self.sample_rate = clients_per_round / population if sampling == "poisson" else 1.0
        self.seed = seed
        self.secure_rng = secure_rng
        self.adaptive = adaptive
        self.count_stddev = 0.0
        self.update_noise_multiplier = self.noise_multiplier
        if adaptive is not None:
            self.count_stddev = (
                adaptive.count_stddev
                if adaptive.count_stddev is not None
                else self.expected_clients / 20.0
            )
            self.update_noise_multiplier = split_noise(self.noise_multiplier, self.count_stddev)
        self._global: ArrayRecord | None = None
        self._sampled: list[int] = []
        self.releases: list[Release] = []
        # One-shot audit (Andrew et al. 2023): `canaries` canary clients whose update is
        # a fixed random unit direction times the clip norm, sampled like real clients;
        # as many held-out directions are never inserted.
        self.canaries = canaries
        self._directions: np.ndarray | None = None
        self._canaries_joined: np.ndarray = np.zeros(0, dtype=bool)
        self.canary_participations = np.zeros(canaries, dtype=np.int64)
        self.accounting = accounting
        if accounting is not None:
            accounting.use_releases(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
                sampling=self.sampling,
            )

    # -------------------------------------------------------------- Strategy API
    def summary(self) -> None:
        """Nothing to log: fedsim reports the DP settings itself."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        if self.sampling == "fixed":
            messages = list(self.inner.configure_train(server_round, arrays, config, grid))
            self._sampled = sorted(int(m.metadata.dst_node_id) for m in messages)
            return messages
        nodes = sorted(grid.get_node_ids())
        rng = dp_numpy_rng(self.secure_rng, self.seed, "poisson-clients", server_round)
        # Each client joins independently with probability q: the sampling the
        # amplified accounting assumes. Drawn for every node, in id order, so the
        # cohort depends on (seed, round) only; with secure_rng it is secret (OS
        # entropy): amplification assumes nobody can tell who was sampled.
        joined = rng.random(len(nodes)) < self.sample_rate
        self._sampled = [n for n, j in zip(nodes, joined, strict=True) if j]
        if self.canaries:
            crng = dp_numpy_rng(self.secure_rng, self.seed, "poisson-canaries", server_round)
            self._canaries_joined = crng.random(self.canaries) < self.sample_rate
        config["server-round"] = server_round
        record = RecordDict(
            {self.inner.arrayrecord_key: arrays, self.inner.configrecord_key: config}
        )
        return [Message(record, node, MessageType.TRAIN) for node in self._sampled]

    def _clipped_sum(
        self, replies: Iterable[Message], global_np: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], int, list[float], int]:
        """Sum of the clipped client updates; how many were within the clip norm, the
        clients' train losses and how many clients replied without error."""
        total = {k: np.zeros_like(v, dtype=np.float64) for k, v in global_np.items()}
        unclipped, losses, n_ok = 0, [], 0
        for reply in replies:
            if reply.has_error():
                continue  # a failed client adds nothing; the sensitivity bound holds
            arrays = next(iter(reply.content.array_records.values()))
            delta = {k: arrays[k].numpy().astype(np.float64) - global_np[k] for k in global_np}
            norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
            scale = min(1.0, self.clip_norm / (norm + 1e-12))
            unclipped += int(norm <= self.clip_norm)
            for k, d in delta.items():
                total[k] += d * scale
            n_ok += 1
            metrics = next(iter(reply.content.metric_records.values()), None)
            if metrics is not None and "train_loss" in metrics:
                losses.append(float(metrics["train_loss"]))
        return total, unclipped, losses, n_ok

    def _add_canaries(self, total: dict[str, np.ndarray], global_np: dict[str, np.ndarray]) -> None:
        """Add this round's canary updates to `total` and count their participations."""
        # Canary updates have norm exactly C: inserted like clipped client updates.
        dirs = self.canary_directions(global_np)
        offset = 0
        summed = self.clip_norm * dirs[: self.canaries][self._canaries_joined].sum(axis=0)
        for k, g in global_np.items():
            total[k] += summed[offset : offset + g.size].reshape(g.shape)
            offset += g.size
        self.canary_participations += self._canaries_joined

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        global_np = {k: v.numpy() for k, v in self._global.items()}
        total, unclipped, losses, n_ok = self._clipped_sum(replies, global_np)
        if self.canaries and self._canaries_joined.any():
            self._add_canaries(total, global_np)
        rng = self._noise_rng(server_round)
        std = self.update_noise_multiplier * self.clip_norm
        new = {}
        for k, g in global_np.items():
            noisy = total[k] + rng.normal(0.0, std, size=g.shape)
            new[k] = (g + noisy / self.expected_clients).astype(g.dtype)
        release = Release(
            round=server_round,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            clip_norm=self.clip_norm,
            sampling=self.sampling,
            clients=list(self._sampled),
            unclipped_fraction=unclipped / n_ok if n_ok else None,
            clip_sum_noise_multiplier=self.update_noise_multiplier,
        )
        self.releases.append(release)
        if self.adaptive is not None:
            noisy_b = self._noisy_unclipped_fraction(unclipped, n_ok, rng)
            release.count_noise_std = self.count_stddev
            release.count_sensitivity = COUNT_SENSITIVITY
            release.noised_unclipped_fraction = noisy_b
            self.clip_norm *= math.exp(
                -self.adaptive.learning_rate * (noisy_b - self.adaptive.target_quantile)
            )
        if self.accounting is not None:
            self.accounting.record_release(
                round=release.round,
                noise_multiplier=release.noise_multiplier,
                sample_rate=release.sample_rate,
                clip_norm=release.clip_norm,
                sampling=release.sampling,
                clients=release.clients,
                **release.ledger_fields(),
            )
        metrics_out: dict[str, Any] = {"clients": n_ok, "clip_norm": release.clip_norm}
        if losses:
            metrics_out["train_loss"] = float(np.mean(losses))
        return ArrayRecord({k: Array(v) for k, v in new.items()}), MetricRecord(metrics_out)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    # -------------------------------------------------------------- helpers
    def _noisy_unclipped_fraction(
        self, unclipped: int, clients: int, rng: np.random.Generator
    ) -> float:
        """The released fraction of unclipped clients (Andrew et al. 2021, Alg. 1).

        The query is sum_i (b_i - 1/2), sensitivity 1/2 under add/remove, plus
        N(0, count_stddev^2); dividing by the fixed D and adding 1/2 back gives an
        unbiased estimate of the unclipped fraction that reveals no more.
        """
        shifted = unclipped - COUNT_SENSITIVITY * clients
        noised = shifted + rng.normal(0.0, self.count_stddev)
        return float(noised / self.expected_clients + COUNT_SENSITIVITY)

    def _noise_rng(self, server_round: int) -> np.random.Generator:
        # The sum's noise and the adaptive-clipping count noise, one stream per round.
        return dp_numpy_rng(self.secure_rng, self.seed, "user-noise", server_round)

    def canary_directions(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """2 x canaries unit directions over the flattened model: inserted, then held out."""
        if self._directions is None:
            from fedsim.empirical.one_shot import canary_directions

            dim = sum(int(v.size) for v in arrays.values())
            seed = numpy_rng(self.seed, "canary-directions").integers(2**31)
            self._directions = canary_directions(2 * self.canaries, dim, int(seed))
        return self._directions

    def state(self) -> dict[str, float]:
        """Mutable state worth checkpointing (the adaptive clip norm)."""
        return {"clip_norm": self.clip_norm}


def joint_noise_multiplier(
    clip_sum_noise_multiplier: float,
    count_noise_std: float | None,
    count_sensitivity: float | None = COUNT_SENSITIVITY,
) -> float:
    """The one Gaussian multiplier that the sum and count releases compose to.

    Andrew et al. 2021, Theorem 1: the sum with multiplier z_delta (noise std / C) and
    a count of add/remove sensitivity s with noise std sigma_b are together a Gaussian
    mechanism of multiplier z = (z_delta^-2 + (sigma_b / s)^-2)^-1/2. Without a count
    release (fixed clipping) z = z_delta.
    """
    if count_noise_std is None:
        return float(clip_sum_noise_multiplier)
    if count_sensitivity is None or count_sensitivity <= 0:
        raise ValueError(f"count_sensitivity must be > 0, got {count_sensitivity!r}")
    return float(
        (clip_sum_noise_multiplier**-2 + (count_noise_std / count_sensitivity) ** -2) ** -0.5
    )


def split_noise(noise_multiplier: float, count_stddev: float) -> float:
    """Noise multiplier left for the update sum when the clip count also gets noise.

    Inverse of :func:`joint_noise_multiplier` with the shifted count (sensitivity
    1/2): z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2.

    Raises:
        ValueError: 2 * count_stddev <= noise_multiplier (no noise budget left).
    """
    if noise_multiplier <= 0:
        raise ValueError("adaptive clipping needs noise_multiplier > 0")
    if count_stddev / COUNT_SENSITIVITY <= noise_multiplier:
        raise ValueError(
            f"adaptive clipping: 2 * count_stddev ({2 * count_stddev:g}) must exceed the "
            f"noise multiplier ({noise_multiplier:g}); raise dp.clip_count_stddev or sample "
            "more clients per round"
        )
    return (noise_multiplier**-2 - (count_stddev / COUNT_SENSITIVITY) ** -2) ** -0.5
