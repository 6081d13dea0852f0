"""One-shot estimate (Andrew et al. 2023): the two-Gaussian (eps, delta) curve and the fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedsim.empirical.one_shot import (
    EstimateInputError,
    canary_directions,
    cosines,
    epsilon_estimate,
    epsilon_two_gaussians,
    gaussian_hockey_stick,
    gaussian_mechanism_delta,
)


def _hockey_stick_by_grid(eps: float, mp: float, sp: float, mq: float, sq: float) -> float:
    """int max(0, p - e^eps q) dx on a fine grid: independent of the closed-form region."""
    lo = min(mp - 40 * sp, mq - 40 * sq)
    hi = max(mp + 40 * sp, mq + 40 * sq)
    x = np.linspace(lo, hi, 800_001)
    gap = np.maximum(0.0, norm.pdf(x, mp, sp) - math.exp(eps) * norm.pdf(x, mq, sq))
    return float(np.trapezoid(gap, x))


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("eps", [0.0, 0.5, 2.0, 8.0])
def test_equal_variances_reduce_to_the_analytic_gaussian(mu: float, eps: float) -> None:
    # Balle & Wang: delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), written out
    # here directly rather than through the module.
    expected = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
    for scale in (1.0, 0.03):  # the curve depends only on mu = |mu1 - mu0| / sigma
        got = gaussian_hockey_stick(eps, mu_p=mu * scale, sigma_p=scale, mu_q=0.0, sigma_q=scale)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert gaussian_mechanism_delta(eps, mu=mu) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("mp", "sp", "mq", "sq"),
    [(1.0, 1.5, 0.0, 1.0), (0.3, 0.5, 0.0, 1.0), (2.0, 1.01, 0.0, 1.0), (-1.0, 0.8, 0.5, 1.2)],
)
@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0, 3.0])
def test_unequal_variances_match_numerical_integration(
    mp: float, sp: float, mq: float, sq: float, eps: float
) -> None:
    got = gaussian_hockey_stick(eps, mu_p=mp, sigma_p=sp, mu_q=mq, sigma_q=sq)
    assert got == pytest.approx(_hockey_stick_by_grid(eps, mp, sp, mq, sq), abs=1e-7)


@pytest.mark.parametrize("mu", [0.5, 1.0, 3.0])
def test_epsilon_solves_the_analytic_gaussian_equation(mu: float) -> None:
    delta = 1e-5
    expected = brentq(lambda e: gaussian_mechanism_delta(e, mu=mu) - delta, 0.0, 100.0, xtol=1e-13)
    got = epsilon_two_gaussians(mu1=mu * 0.1, sigma1=0.1, mu0=0.0, sigma0=0.1, delta=delta)
    assert got == pytest.approx(expected, abs=1e-9)


def test_known_gaussian_mechanism_value() -> None:
    # mu = 1 at delta = 1e-5: eps = 4.3772 (the mu-GDP conversion, solved independently
    # above; pinned here so a regression shows up as a number).
    got = epsilon_two_gaussians(mu1=1.0, sigma1=1.0, mu0=0.0, sigma0=1.0, delta=1e-5)
    assert got == pytest.approx(4.377178, abs=1e-6)


def test_identical_gaussians_give_zero() -> None:
    assert epsilon_two_gaussians(mu1=0.2, sigma1=0.05, mu0=0.2, sigma0=0.05, delta=1e-5) == 0.0
    assert gaussian_hockey_stick(0.0, mu_p=1.0, sigma_p=2.0, mu_q=1.0, sigma_q=2.0) == 0.0


def test_samples_of_one_distribution_estimate_near_zero() -> None:
    # Finite samples never fit exactly equal Gaussians, and a spread mismatch alone gives
    # eps > 0 at small delta; with 5000 canaries per side it stays well under 1 while a
    # 3-sigma shift gives ~ 17.
    rng = np.random.default_rng(0)
    same = [
        epsilon_estimate(rng.normal(0, 0.03, 5000), rng.normal(0, 0.03, 5000), delta=1e-5)
        for _ in range(5)
    ]
    assert max(same) < 0.6
    shifted = epsilon_estimate(rng.normal(0.09, 0.03, 5000), rng.normal(0, 0.03, 5000), delta=1e-5)
    assert shifted > 10 * max(same)


def test_well_separated_canaries_give_a_large_estimate() -> None:
    rng = np.random.default_rng(1)
    held = rng.normal(0.0, 0.01, 1000)
    eps = [
        epsilon_estimate(rng.normal(shift, 0.01, 1000), held, delta=1e-5) for shift in (0.02, 0.1)
    ]
    assert 5 < eps[0] < eps[1]
    assert eps[1] > 40  # mu = 10: eps ~ mu^2 / 2 + mu * Phi^-1(1 - delta)


def test_estimate_is_symmetric() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.05, 0.02, 800), rng.normal(0.0, 0.03, 800)
    assert epsilon_estimate(a, b, delta=1e-5) == pytest.approx(
        epsilon_estimate(b, a, delta=1e-5), rel=1e-12
    )
    # Mirroring both sets (negated cosines) changes nothing either.
    assert epsilon_estimate(-a, -b, delta=1e-5) == pytest.approx(
        epsilon_estimate(a, b, delta=1e-5), rel=1e-9
    )


def test_larger_delta_gives_smaller_epsilon() -> None:
    values = [
        epsilon_two_gaussians(mu1=1.0, sigma1=1.3, mu0=0.0, sigma0=1.0, delta=d)
        for d in (1e-7, 1e-5, 1e-3)
    ]
    assert values[0] > values[1] > values[2] > 0


def test_directions_are_unit_and_seeded() -> None:
    u = canary_directions(50, 1000, seed=4)
    assert u.shape == (50, 1000)
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0)
    assert np.array_equal(u, canary_directions(50, 1000, seed=4))
    # Held-out canaries are nearly orthogonal to any fixed vector: cos ~ N(0, 1/dim).
    cos = cosines(np.ones(1000), u)
    assert abs(float(np.mean(cos))) < 4 / math.sqrt(1000 * 50)
    assert float(np.std(cos)) == pytest.approx(1 / math.sqrt(1000), rel=0.3)


def test_cosines_by_hand_and_inserted_canaries_stand_out() -> None:
    u = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert np.allclose(cosines(np.array([3.0, 0.0]), u), [1.0, 0.0, 1 / math.sqrt(2)])
    # A model delta that contains canary 0 (plus noise) aligns with it, not with others.
    dirs = canary_directions(20, 5000, seed=9)
    rng = np.random.default_rng(9)
    delta = dirs[:10].sum(axis=0) + rng.normal(0, 0.02, 5000)
    cos = cosines(delta, dirs)
    assert cos[:10].min() > 5 * np.abs(cos[10:]).max()


def test_bad_inputs_are_named() -> None:
    with pytest.raises(EstimateInputError, match="shape"):
        cosines(np.ones(3), np.ones((2, 4)))
    with pytest.raises(EstimateInputError, match="zero vector"):
        cosines(np.zeros(3), np.ones((2, 3)))
    with pytest.raises(EstimateInputError, match="at least 2"):
        epsilon_estimate(np.array([0.1]), np.array([0.0, 0.1]), delta=1e-5)
    with pytest.raises(EstimateInputError, match="zero spread"):
        epsilon_estimate(np.ones(5), np.array([0.0, 0.1]), delta=1e-5)
    with pytest.raises(EstimateInputError, match="delta must be in"):
        epsilon_estimate(np.array([0.0, 0.1]), np.array([0.0, 0.1]), delta=0.0)
    with pytest.raises(EstimateInputError, match="standard deviation"):
        gaussian_hockey_stick(1.0, mu_p=0.0, sigma_p=0.0, mu_q=0.0, sigma_q=1.0)
    with pytest.raises(EstimateInputError, match="dim must be"):
        canary_directions(3, 1, seed=0)
