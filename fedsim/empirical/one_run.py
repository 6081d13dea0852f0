"""Example-level privacy audit from one training run (Steinke, Nasr & Jagielski 2023).

"Privacy Auditing with One (1) Training Run", arXiv:2305.08846. The auditor holds m
canaries; each is put into the training data independently with probability 1/2
(:func:`canary_assignment`). After training it scores every canary (higher score = more
likely included), guesses "in" for the k+ highest, "out" for the k- lowest and abstains
on the rest (:func:`score_guesses`). Under (eps, delta)-DP the number v of correct guesses
among the r = k+ + k- guesses is stochastically dominated by Binomial(r, e^eps/(1+e^eps)),
plus a delta term (the paper's Section 5, approximate DP). :func:`p_value` is that
bound; :func:`epsilon_lower_bound` is the largest eps it rejects at the asked confidence,
computed as the paper's Appendix D code (``p_value_DP_audit`` / ``get_eps_audit``) does.

The result is a statistical lower bound: with probability >= confidence over the canary
coin flips and the training randomness, the trained algorithm is not (eps, delta)-DP for
any eps below it. It is capped by the number of guesses: at 95 % confidence, 1000 guesses
all correct certify only eps >= 5.8 (see the tests), whatever the true leakage.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import binom

from fedsim.errors import AuditInputError

__all__ = [
    "AuditInputError",
    "best_lower_bound",
    "brute_force_tail",
    "canary_assignment",
    "epsilon_lower_bound",
    "p_value",
    "score_guesses",
]


# Bisection stops when the bracket is this narrow; the returned low end is then within
# this distance below the exact largest rejected epsilon (and never above it).
_EPS_TOLERANCE = 1e-10
# No finite r rejects eps beyond this: e^-700 underflows, so q == 1 in floating point.
_EPS_CEILING = 700.0


def _check_counts(guesses: int, correct: int, canaries: int | None, delta: float) -> None:
    for name, value in (("guesses", guesses), ("correct", correct)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise AuditInputError(f"{name} must be an integer >= 0, got {value!r}")
    if correct > guesses:
        raise AuditInputError(f"correct must be in [0, guesses={guesses}], got {correct}")
    if not (isinstance(delta, int | float) and 0.0 <= delta < 1.0):
        raise AuditInputError(f"delta must be in [0, 1), got {delta!r}")
    if canaries is not None:
        if isinstance(canaries, bool) or not isinstance(canaries, int | np.integer):
            raise AuditInputError(f"canaries must be an integer >= guesses, got {canaries!r}")
        if canaries < guesses:
            raise AuditInputError(
                f"canaries must be >= guesses={guesses} (one guess per canary at most), "
                f"got {canaries}"
            )
    elif delta > 0:
        # The delta term of the bound is 2 * m * delta: without m it cannot be computed.
        raise AuditInputError(
            "canaries (m, the number of canaries randomised) is required when delta > 0"
        )


def p_value(
    *,
    guesses: int,
    correct: int,
    epsilon: float,
    delta: float = 0.0,
    canaries: int | None = None,
) -> float:
    """Upper bound on P[at least `correct` of `guesses` guesses right] under (eps, delta)-DP.

    With q = e^eps / (1 + e^eps) and B ~ Binomial(r, q), r = guesses, v = correct,
    m = canaries, this is (Steinke et al. 2023, Section 5; the code of Appendix D)::

        P[B >= v] + 2 * m * delta * max_{i = 1..v} P[v - i <= B < v] / i

    capped at 1. For delta = 0 it is the binomial tail P[B >= v] exactly.

    Args:
        guesses: r, the number of guesses made (abstentions excluded), >= 0.
        correct: v, the number of correct guesses, in [0, guesses].
        epsilon: The eps of the null hypothesis "the algorithm is (eps, delta)-DP", >= 0.
        delta: The delta of the null hypothesis, in [0, 1).
        canaries: m, the number of canaries randomised, >= guesses; required if delta > 0.

    Returns:
        The p-value in [0, 1]: a small value rejects (eps, delta)-DP.

    Raises:
        AuditInputError: an argument out of range.
    """
    _check_counts(guesses, correct, canaries, delta)
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0):
        raise AuditInputError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    return _p_value(int(guesses), int(correct), float(epsilon), float(delta), int(canaries or 0))


def _p_value(r: int, v: int, eps: float, delta: float, m: int) -> float:
    q = float(expit(eps))  # accuracy of eps-DP randomised response, stable for large eps
    tail = float(binom.sf(v - 1, r, q))  # P[B >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= B < v] for i = 1..v is a running sum of pmf(v-1), pmf(v-2), ..., pmf(0).
    window = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
    worst = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * worst, 1.0)


def epsilon_lower_bound(
    *,
    guesses: int,
    correct: int,
    confidence: float = 0.95,
    delta: float = 0.0,
    canaries: int | None = None,
) -> float:
    """The largest eps that `correct` right out of `guesses` rejects at `confidence`.

    That is the largest eps with ``p_value(eps) <= 1 - confidence`` (0.0 when even eps = 0
    is not rejected), found by bisection as in the paper's ``get_eps_audit``: the
    invariant is that the low end is rejected, and the low end is returned, so rounding
    never overstates the bound. Bisection needs the p-value to grow with eps: for
    delta = 0 it is a binomial tail in q = e^eps / (1 + e^eps), increasing in q; with the
    delta term the tests check it on random (r, v, m * delta, eps) draws.

    Args:
        guesses: r, the number of guesses (abstentions excluded), >= 0.
        correct: v, the number of correct guesses, in [0, guesses].
        confidence: 1 - alpha, in (0, 1); 0.95 rejects at the 5 % level.
        delta: The delta at which eps is audited, in [0, 1); the paper's bound adds
            2 * m * delta times a binomial window term (see :func:`p_value`).
        canaries: m, the number of canaries randomised (>= guesses); required if delta > 0.

    Returns:
        A lower bound on eps (>= 0): the run is not (eps, delta)-DP for any smaller eps,
        with probability >= confidence.

    Raises:
        AuditInputError: an argument out of range (named with the allowed range).

    Example:
        >>> round(epsilon_lower_bound(guesses=1000, correct=1000), 4)
        5.8091
    """
    _check_counts(guesses, correct, canaries, delta)
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise AuditInputError(f"confidence must be in (0, 1), got {confidence!r}")
    r, v, m = int(guesses), int(correct), int(canaries or 0)
    alpha = 1.0 - float(confidence)

    def rejected(eps: float) -> bool:
        return _p_value(r, v, eps, float(delta), m) <= alpha

    if r == 0 or not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_CEILING:  # unreachable for v <= r: P[B >= v] -> 1 as eps grows
            raise AuditInputError(f"no finite eps bound for guesses={r}, correct={v}")
    while hi - lo > _EPS_TOLERANCE:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def brute_force_tail(r: int, p: float, v: int) -> float:
    """P[Binomial(r, p) >= v] by the exact sum over k = v..r, in rational arithmetic.

    Slow (meant for tests of :func:`p_value` on small r): every term is an exact
    fraction, so the only rounding is the final conversion to float.

    Args:
        r: Number of trials, >= 0.
        p: Success probability, in [0, 1].
        v: Threshold, any integer (v <= 0 gives 1.0, v > r gives 0.0).

    Returns:
        The tail probability.

    Raises:
        AuditInputError: r < 0 or p outside [0, 1].
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise AuditInputError(f"r must be an integer >= 0, got {r!r}")
    if not 0.0 <= p <= 1.0:
        raise AuditInputError(f"p must be in [0, 1], got {p!r}")
    pf = Fraction(p)
    total = sum(
        (math.comb(r, k) * pf**k * (1 - pf) ** (r - k) for k in range(max(v, 0), r + 1)),
        Fraction(0),
    )
    return float(total)


def score_guesses(
    scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int
) -> tuple[int, int]:
    """Guess "in" for the k_plus highest scores, "out" for the k_minus lowest, count hits.

    Sign convention: a higher score means "more likely included". For a loss (lower loss
    = more likely trained on) pass ``-loss``. Ties are broken by canary index (a stable
    sort): the index is public, so the guesses stay a function of what the auditor may
    see, which is all the theorem needs.

    Args:
        scores: (m,) finite scores, one per canary.
        included: (m,) booleans: canary i was put into the training data.
        k_plus: Number of "in" guesses, >= 0.
        k_minus: Number of "out" guesses, >= 0, with k_plus + k_minus <= m.

    Returns:
        ``(guesses, correct)``: r = k_plus + k_minus and the number v of right guesses.

    Raises:
        AuditInputError: shapes differ or are not 1-D, non-finite scores, bad k values.
    """
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included)
    if scores.ndim != 1 or included.shape != scores.shape:
        raise AuditInputError(
            f"scores and included must be 1-D arrays of the same length, got shapes "
            f"{scores.shape} and {included.shape}"
        )
    if included.dtype != bool:
        raise AuditInputError(f"included must be a boolean array, got dtype {included.dtype}")
    if not np.all(np.isfinite(scores)):
        raise AuditInputError("scores must all be finite (no NaN or inf)")
    m = scores.shape[0]
    for name, k in (("k_plus", k_plus), ("k_minus", k_minus)):
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise AuditInputError(f"{name} must be an integer >= 0, got {k!r}")
    if k_plus + k_minus > m:
        raise AuditInputError(
            f"k_plus + k_minus must be <= the number of canaries {m}, got {k_plus + k_minus}"
        )
    order = np.argsort(-scores, kind="stable")  # highest score first
    top = order[:k_plus]
    bottom = order[m - k_minus :]
    correct = int(np.count_nonzero(included[top])) + int(np.count_nonzero(~included[bottom]))
    return int(k_plus + k_minus), correct


def best_lower_bound(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    confidence: float = 0.95,
    k_values: Sequence[tuple[int, int]],
    delta: float = 0.0,
) -> dict[str, Any]:
    """The best one-run bound over several (k_plus, k_minus) choices, paid for honestly.

    Trying several k values on the same scores is multiple testing: picking the best
    after looking would overstate the confidence. Each choice is therefore tested at
    level (1 - confidence) / len(k_values) (a union bound), so the returned bound holds
    at the stated confidence. With a single pair this is :func:`epsilon_lower_bound`
    on :func:`score_guesses`, as when k is fixed before looking (the paper's way).

    Args:
        scores: (m,) canary scores, higher = more likely included (pass -loss for a loss).
        included: (m,) booleans from :func:`canary_assignment`.
        confidence: Overall confidence in (0, 1).
        k_values: Non-empty sequence of (k_plus, k_minus) pairs.
        delta: delta in [0, 1) at which eps is audited (m = len(scores) canaries).

    Returns:
        A JSON-ready record: ``method`` ("one_run"), ``epsilon_lower_bound``,
        ``confidence``, ``delta``, ``canaries``, ``k_plus``, ``k_minus``, ``guesses``,
        ``correct``, ``tests`` (number of k pairs tried) and ``per_test_confidence``.

    Raises:
        AuditInputError: empty k_values, or any argument rejected by the functions above.
    """
    if len(k_values) == 0:
        raise AuditInputError("k_values must hold at least one (k_plus, k_minus) pair")
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise AuditInputError(f"confidence must be in (0, 1), got {confidence!r}")
    m = int(np.asarray(scores).size)  # score_guesses below rejects a non-1-D array
    per_test = 1.0 - (1.0 - float(confidence)) / len(k_values)
    trials = [
        _one_k_trial(scores, included, k_plus, k_minus, confidence=per_test, delta=delta)
        for k_plus, k_minus in k_values
    ]
    # max() keeps the first of equal bounds, so the earliest listed k wins a tie.
    best = max(trials, key=lambda t: t["epsilon_lower_bound"])
    return {
        "method": "one_run",
        **best,
        "confidence": float(confidence),
        "delta": float(delta),
        "canaries": m,
        "tests": len(k_values),
        "per_test_confidence": per_test,
    }


def canary_assignment(m: int, seed: int) -> np.ndarray:
    """Which of m canaries go into the training data: each independently with prob. 1/2.

    The independence is what the one-run theorem rests on; the seed must not be chosen
    after looking at the trained model.

    Args:
        m: Number of canaries, >= 1.
        seed: Seed of the assignment (numpy PCG64 through ``default_rng``).

    Returns:
        (m,) boolean array, True = included.

    Raises:
        AuditInputError: m < 1.
    """
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
        raise AuditInputError(f"m must be an integer >= 1, got {m!r}")
    return np.random.default_rng(seed).random(int(m)) < 0.5


def _one_k_trial(
    scores: np.ndarray,
    included: np.ndarray,
    k_plus: int,
    k_minus: int,
    *,
    confidence: float,
    delta: float,
) -> dict[str, Any]:
    """The bound of one (k_plus, k_minus) choice at `confidence`, with its guess counts."""
    m = int(np.asarray(scores).size)
    guesses, correct = score_guesses(scores, included, k_plus, k_minus)
    eps = epsilon_lower_bound(
        guesses=guesses, correct=correct, confidence=confidence, delta=delta, canaries=m
    )
    return {
        "epsilon_lower_bound": eps,
        "k_plus": int(k_plus),
        "k_minus": int(k_minus),
        "guesses": guesses,
        "correct": correct,
    }
