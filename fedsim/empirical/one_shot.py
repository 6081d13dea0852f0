"""User-level privacy estimate from one training run (Andrew et al. 2023).

"One-shot Empirical Privacy Estimation for Federated Learning", arXiv:2302.03098.
Canary clients each send a fixed random unit direction as their model update (scaled to
the clipping norm); some canaries are inserted into training, others held out. After
training, the cosine between the final model delta and each canary direction is
measured (:func:`cosines`). Held-out cosines show what chance alignment looks like;
inserted ones are shifted by the canary's contribution. Fitting a Gaussian to each set
and computing the (eps, delta) curve of distinguishing the two Gaussians gives the
estimate (:func:`epsilon_estimate`).

This is an ESTIMATE, not a certified bound: it assumes both sets of cosines are
Gaussian (the paper shows this holds asymptotically, in high dimension, for the Gaussian
mechanism) and uses point estimates of their means and variances, with no confidence
interval. Report it as "estimated eps", never as a guarantee or a lower bound.

The (eps, delta) curve of two 1-D Gaussians is computed exactly: the privacy loss
log p(x)/q(x) is a quadratic in x, so the set where it exceeds eps is an interval or the
complement of one, and the hockey-stick divergence is a difference of normal CDFs there
(:func:`gaussian_hockey_stick`). The tests check it against numerical integration and,
for equal variances, against the analytic Gaussian mechanism (Balle & Wang 2018).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from fedsim.errors import FedsimError

__all__ = [
    "EstimateInputError",
    "canary_directions",
    "cosines",
    "epsilon_estimate",
    "epsilon_two_gaussians",
    "gaussian_hockey_stick",
    "gaussian_mechanism_delta",
]


class EstimateInputError(FedsimError, ValueError):
    """A one-shot argument out of range; the message names the value and the allowed range."""


# Bracket limit of the eps search: beyond it delta(eps) is far below any delta in use.
_EPS_CEILING = 1e6


def canary_directions(n: int, dim: int, seed: int) -> np.ndarray:
    """n independent directions drawn uniformly from the unit sphere in R^dim.

    A normalised standard Gaussian vector is uniform on the sphere, so the cosine of a
    held-out canary with any fixed vector is distributed as the paper's null.

    Args:
        n: Number of canaries, >= 1.
        dim: Dimension (number of model parameters), >= 2.
        seed: Seed (numpy PCG64 through ``default_rng``).

    Returns:
        (n, dim) float64 array with unit-norm rows.

    Raises:
        EstimateInputError: n < 1 or dim < 2.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise EstimateInputError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2:
        raise EstimateInputError(f"dim must be an integer >= 2, got {dim!r}")
    g = np.random.default_rng(seed).standard_normal((int(n), int(dim)))  # (n, dim)
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def cosines(delta: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Cosine between a model delta and each canary direction.

    Args:
        delta: The final model minus the initial model, flattened: (dim,). Any shape is
            accepted and flattened.
        directions: (n, dim) canary directions (need not be unit norm).

    Returns:
        (n,) cosines in [-1, 1].

    Raises:
        EstimateInputError: dimensions differ, a vector is zero, or values are not finite.
    """
    d = np.asarray(delta, dtype=float).reshape(-1)  # (dim,)
    u = np.asarray(directions, dtype=float)
    if u.ndim != 2 or u.shape[1] != d.shape[0]:
        raise EstimateInputError(
            f"directions must have shape (n, {d.shape[0]}) to match delta, got {u.shape}"
        )
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(u))):
        raise EstimateInputError("delta and directions must be finite (no NaN or inf)")
    d_norm = float(np.linalg.norm(d))
    u_norm = np.linalg.norm(u, axis=1)  # (n,)
    if d_norm == 0.0:
        raise EstimateInputError("delta is the zero vector: its cosine is undefined")
    if np.any(u_norm == 0.0):
        raise EstimateInputError(
            f"directions row {int(np.argmin(u_norm))} is the zero vector: cosine undefined"
        )
    return np.clip((u @ d) / (u_norm * d_norm), -1.0, 1.0)


def _check_gaussian(name: str, mu: float, sigma: float) -> None:
    if not math.isfinite(mu):
        raise EstimateInputError(f"{name} mean must be finite, got {mu!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise EstimateInputError(f"{name} standard deviation must be finite and > 0, got {sigma}")


def _log_mass(lo: float, hi: float, mu: float, sigma: float) -> float:
    """log P[lo < X < hi] for X ~ N(mu, sigma^2), accurate far in either tail."""
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    if a >= b:
        return -math.inf
    if a >= 0.0:  # both ends in the upper half: subtract survival functions
        la, lb = norm.logsf(a), norm.logsf(b)
    elif b <= 0.0:  # both in the lower half: subtract CDFs
        la, lb = norm.logcdf(b), norm.logcdf(a)
    else:  # straddles the mean: each excluded tail is at most 1/2
        return math.log1p(-(norm.cdf(a) + norm.sf(b)))
    if la == -math.inf:
        return -math.inf
    return float(la + math.log1p(-math.exp(lb - la)))


def _loss_region(
    epsilon: float, mu_p: float, sigma_p: float, mu_q: float, sigma_q: float
) -> list[tuple[float, float]]:
    """Intervals where log p(x) - log q(x) > epsilon, for p = N(mu_p), q = N(mu_q)."""
    # log p - log q = a x^2 + b x + c (Gaussian log-densities are quadratics in x).
    a = 0.5 / sigma_q**2 - 0.5 / sigma_p**2
    b = mu_p / sigma_p**2 - mu_q / sigma_q**2
    c = 0.5 * (mu_q / sigma_q) ** 2 - 0.5 * (mu_p / sigma_p) ** 2 + math.log(sigma_q / sigma_p)
    c -= epsilon
    if a == 0.0:  # equal variances: the loss is linear, the region a half-line
        if b == 0.0:
            return [(-math.inf, math.inf)] if c > 0 else []
        t = -c / b
        return [(t, math.inf)] if b > 0 else [(-math.inf, t)]
    disc = b * b - 4.0 * a * c
    if disc <= 0.0:  # the quadratic never changes sign: it has the sign of a
        return [(-math.inf, math.inf)] if a > 0 else []
    # Stable roots: no cancellation even when a is tiny (nearly equal variances).
    half = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    lo, hi = sorted((half / a, c / half))
    if a > 0:
        return [(-math.inf, lo), (hi, math.inf)]
    return [(lo, hi)]


def gaussian_hockey_stick(
    epsilon: float, *, mu_p: float, sigma_p: float, mu_q: float, sigma_q: float
) -> float:
    """delta(eps) = sup_S P(S) - e^eps Q(S) for P = N(mu_p, sigma_p^2), Q = N(mu_q, sigma_q^2).

    The hockey-stick divergence of P from Q: P and Q are (eps, delta)-indistinguishable
    in this direction exactly when this is <= delta. The sup is attained on the set
    where the privacy loss log p/q exceeds eps, found in closed form.

    Args:
        epsilon: eps >= 0.
        mu_p, sigma_p: Mean and standard deviation (> 0) of P.
        mu_q, sigma_q: Mean and standard deviation (> 0) of Q.

    Returns:
        delta in [0, 1].

    Raises:
        EstimateInputError: a non-finite mean, a standard deviation <= 0, or eps < 0.
    """
    _check_gaussian("P", mu_p, sigma_p)
    _check_gaussian("Q", mu_q, sigma_q)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise EstimateInputError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    region = _loss_region(epsilon, mu_p, sigma_p, mu_q, sigma_q)
    if not region:
        return 0.0
    log_p = float(np.logaddexp.reduce([_log_mass(lo, hi, mu_p, sigma_p) for lo, hi in region]))
    log_q = float(np.logaddexp.reduce([_log_mass(lo, hi, mu_q, sigma_q) for lo, hi in region]))
    if log_p == -math.inf:
        return 0.0
    # P(S) - e^eps Q(S) = P(S) (1 - e^(eps + log Q - log P)), with no overflow of e^eps.
    ratio = epsilon + log_q - log_p
    if ratio >= 0.0:
        return 0.0
    return float(min(1.0, math.exp(log_p) * -math.expm1(ratio)))


def gaussian_mechanism_delta(epsilon: float, *, mu: float) -> float:
    """delta(eps) of the Gaussian mechanism with sensitivity/noise ratio mu (Balle & Wang 2018).

    delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), the exact curve of
    N(mu, 1) against N(0, 1): the analytic Gaussian mechanism of "Improving the Gaussian
    Mechanism for Differential Privacy" (2018), also the mu-GDP curve of Dong, Roth & Su.

    Args:
        epsilon: eps >= 0.
        mu: Separation of the two unit-variance Gaussians, > 0.

    Returns:
        delta in [0, 1].

    Raises:
        EstimateInputError: eps < 0 or mu <= 0.
    """
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise EstimateInputError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if not (math.isfinite(mu) and mu > 0):
        raise EstimateInputError(f"mu must be finite and > 0, got {mu!r}")
    first = norm.cdf(-epsilon / mu + mu / 2)
    second = math.exp(epsilon + norm.logcdf(-epsilon / mu - mu / 2))
    return float(max(0.0, first - second))


def epsilon_two_gaussians(
    *, mu1: float, sigma1: float, mu0: float, sigma0: float, delta: float
) -> float:
    """The smallest eps at which N(mu1, sigma1^2) and N(mu0, sigma0^2) are (eps, delta)-close.

    DP bounds both directions, so this is the smallest eps >= 0 with both hockey-stick
    divergences (1 from 0, and 0 from 1) <= delta. Each is non-increasing in eps; the
    root is found with Brent's method after bracketing.

    Args:
        mu1, sigma1: Mean and standard deviation (> 0) of the first Gaussian.
        mu0, sigma0: Mean and standard deviation (> 0) of the second Gaussian.
        delta: Target delta in (0, 1).

    Returns:
        eps >= 0 (0.0 when the Gaussians are already within delta at eps = 0).

    Raises:
        EstimateInputError: bad means, standard deviations or delta.
    """
    _check_gaussian("first", mu1, sigma1)
    _check_gaussian("second", mu0, sigma0)
    if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
        raise EstimateInputError(f"delta must be in (0, 1), got {delta!r}")

    def excess(eps: float) -> float:
        forward = gaussian_hockey_stick(eps, mu_p=mu1, sigma_p=sigma1, mu_q=mu0, sigma_q=sigma0)
        backward = gaussian_hockey_stick(eps, mu_p=mu0, sigma_p=sigma0, mu_q=mu1, sigma_q=sigma1)
        return max(forward, backward) - delta

    if excess(0.0) <= 0.0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0.0:
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_CEILING:
            raise EstimateInputError(
                f"the Gaussians are too far apart for delta={delta}: eps > {_EPS_CEILING:g}"
            )
    return float(brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


def epsilon_estimate(inserted_cos: np.ndarray, heldout_cos: np.ndarray, *, delta: float) -> float:
    """Estimated user-level eps from inserted and held-out canary cosines (Andrew et al.).

    Fits N(mu1, s1^2) to the inserted canaries' cosines and N(mu0, s0^2) to the held-out
    ones (sample mean and standard deviation) and returns the eps of distinguishing the
    two Gaussians at `delta` (:func:`epsilon_two_gaussians`). Symmetric in its two
    arguments. With equal variances this is the Gaussian mechanism with
    mu = |mu1 - mu0| / s.

    This is an estimate, not a bound: it trusts the Gaussian fit and the point estimates
    of the means and variances. Do not present it as a guarantee or a lower bound. With
    few canaries the two fitted spreads differ by chance, and unequal variances alone give
    eps > 0 at small delta (the heavier tail dominates): use hundreds of canaries per set.

    Args:
        inserted_cos: (n1,) cosines of canaries that took part in training, n1 >= 2.
        heldout_cos: (n0,) cosines of held-out canaries, n0 >= 2.
        delta: delta in (0, 1) at which eps is estimated.

    Returns:
        The eps estimate, >= 0.

    Raises:
        EstimateInputError: fewer than 2 values in a set, non-finite values, a set with
            zero spread (no Gaussian fits it), or delta outside (0, 1).
    """
    fits = []
    for name, values in (("inserted_cos", inserted_cos), ("heldout_cos", heldout_cos)):
        x = np.asarray(values, dtype=float).reshape(-1)
        if x.shape[0] < 2:
            raise EstimateInputError(f"{name} needs at least 2 values, got {x.shape[0]}")
        if not np.all(np.isfinite(x)):
            raise EstimateInputError(f"{name} must be finite (no NaN or inf)")
        spread = float(np.std(x, ddof=1))
        if spread == 0.0:
            raise EstimateInputError(f"{name} has zero spread: no Gaussian can be fitted")
        fits.append((float(np.mean(x)), spread))
    (mu1, s1), (mu0, s0) = fits
    return epsilon_two_gaussians(mu1=mu1, sigma1=s1, mu0=mu0, sigma0=s0, delta=delta)
