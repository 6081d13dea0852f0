"""One-run audit maths (Steinke, Nasr & Jagielski 2023) against exact binomial sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from fedsim.empirical.one_run import (
    AuditInputError,
    best_lower_bound,
    brute_force_tail,
    canary_assignment,
    epsilon_lower_bound,
    p_value,
    score_guesses,
)


def test_brute_force_tail_hand_values() -> None:
    # P[Bin(3, 1/2) >= 2] = (3 + 1) / 8 and P[Bin(4, 0.3) >= 4] = 0.3^4, by hand.
    assert brute_force_tail(3, 0.5, 2) == 0.5
    assert brute_force_tail(4, 0.3, 4) == pytest.approx(0.0081, rel=1e-15)
    assert brute_force_tail(5, 0.9, 0) == 1.0
    assert brute_force_tail(5, 0.9, 6) == 0.0


@pytest.mark.parametrize("r", [1, 2, 7, 20, 60])
@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0, 2.5, 6.0])
def test_p_value_without_delta_is_the_exact_binomial_tail(r: int, eps: float) -> None:
    q = float(expit(eps))
    for v in range(r + 1):
        exact = brute_force_tail(r, q, v)
        got = p_value(guesses=r, correct=v, epsilon=eps)
        assert got == pytest.approx(exact, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("r", "v", "eps"), [(10, 8, 0.5), (30, 25, 1.0), (40, 40, 2.0)])
def test_p_value_delta_term_matches_brute_force(r: int, v: int, eps: float) -> None:
    # The delta term (paper, Section 5 and Appendix D): + 2 m delta max_i P[v - i <= B < v] / i,
    # each window a difference of two exact tails.
    m, delta = 500, 1e-4
    q = float(expit(eps))
    tail_v = brute_force_tail(r, q, v)
    worst = max((brute_force_tail(r, q, v - i) - tail_v) / i for i in range(1, v + 1))
    expected = min(1.0, tail_v + 2 * m * delta * worst)
    got = p_value(guesses=r, correct=v, epsilon=eps, delta=delta, canaries=m)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("r", [5, 12, 40])
def test_bound_is_the_largest_rejected_epsilon(r: int) -> None:
    alpha = 0.05
    for v in range(r + 1):
        eps = epsilon_lower_bound(guesses=r, correct=v, confidence=1 - alpha)
        if eps > 0:
            # eps itself is rejected by the exact tail, and a hair above it is not.
            assert brute_force_tail(r, float(expit(eps)), v) <= alpha
            assert brute_force_tail(r, float(expit(eps + 1e-7)), v) > alpha
        else:
            # 0.0 means even eps = 0 (fair coin guessing) is not rejected.
            assert brute_force_tail(r, 0.5, v) > alpha


def test_all_correct_closed_form_and_the_m1000_cap() -> None:
    # With v = r the tail is q^r, so the bound solves q^r = alpha: q = alpha^(1/r) and
    # eps = logit(q). For m = r = 1000 at 95 % that is 5.80907: "a few units" of eps,
    # whatever the true leakage (PRIVACY.md).
    for r in (1, 10, 100, 1000):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(guesses=r, correct=r) == pytest.approx(
            max(0.0, logit(q)), abs=1e-8
        )
    assert epsilon_lower_bound(guesses=1000, correct=1000, canaries=1000) == pytest.approx(
        5.809068, abs=1e-6
    )
    # One guess, right, never rejects anything at 95 %: P[one right guess] >= 1/2.
    assert epsilon_lower_bound(guesses=1, correct=1) == 0.0


def test_regression_numbers_with_delta() -> None:
    # Computed here; they agree with the values a third-party reproduction attributes to
    # the paper (App. D: m=1000, r=100, v=75 -> 0.673; Sec. 7: m=1e5, r=1510, v=1439 ->
    # 2.675), which this session could not check against the PDF itself.
    assert epsilon_lower_bound(guesses=100, correct=75, delta=1e-4, canaries=1000) == pytest.approx(
        0.672985, abs=1e-6
    )
    assert epsilon_lower_bound(
        guesses=1510, correct=1439, delta=1e-5, canaries=100_000
    ) == pytest.approx(2.675851, abs=1e-6)
    # delta > 0 can only weaken the bound.
    assert epsilon_lower_bound(guesses=100, correct=75) > 0.672985


@settings(max_examples=60, deadline=None)
@given(r=st.integers(1, 300), data=st.data())
def test_more_correct_guesses_never_lower_the_bound(r: int, data: st.DataObject) -> None:
    v = data.draw(st.integers(0, r - 1))
    lower = epsilon_lower_bound(guesses=r, correct=v, delta=1e-5, canaries=2 * r)
    higher = epsilon_lower_bound(guesses=r, correct=v + 1, delta=1e-5, canaries=2 * r)
    assert higher >= lower


@settings(max_examples=200, deadline=None)
@given(
    r=st.integers(1, 400),
    data=st.data(),
    two_m_delta=st.sampled_from([0.0, 1e-3, 0.05, 0.5, 2.0]),
    eps=st.floats(0.0, 12.0),
    step=st.floats(1e-3, 3.0),
)
def test_p_value_grows_with_epsilon(
    r: int, data: st.DataObject, two_m_delta: float, eps: float, step: float
) -> None:
    # The bisection in epsilon_lower_bound is sound only if this holds.
    v = data.draw(st.integers(0, r))
    m = 10 * r
    kwargs = {"guesses": r, "correct": v, "delta": two_m_delta / (2 * m), "canaries": m}
    assert p_value(epsilon=eps, **kwargs) <= p_value(epsilon=eps + step, **kwargs) + 1e-12


def test_higher_confidence_gives_a_smaller_bound() -> None:
    bounds = [
        epsilon_lower_bound(guesses=500, correct=450, confidence=c) for c in (0.9, 0.95, 0.99)
    ]
    assert bounds[0] > bounds[1] > bounds[2] > 0


def test_random_guessing_gives_zero() -> None:
    assert epsilon_lower_bound(guesses=1000, correct=500) == 0.0
    assert epsilon_lower_bound(guesses=1000, correct=0) == 0.0
    assert epsilon_lower_bound(guesses=0, correct=0) == 0.0


def test_false_positive_rate_under_no_leakage_is_at_most_alpha() -> None:
    # Scores independent of inclusion (a perfectly private run): the bound may exceed 0
    # only with probability <= 5 %. 400 fixed seeds; the binomial 99.9 % quantile of
    # Bin(400, 0.05) is 34, so more than 34 positives would mean an invalid test.
    positives = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        included = canary_assignment(200, seed=10_000 + seed)
        guesses, correct = score_guesses(rng.standard_normal(200), included, 50, 50)
        positives += epsilon_lower_bound(guesses=guesses, correct=correct) > 0
    assert positives <= 34


def test_bound_stays_below_the_true_epsilon_of_randomised_response() -> None:
    # Each guess right with probability e^1/(1+e^1): exactly what 1-DP allows. The bound
    # must stay <= 1 in at least 95 % of trials, and be informative (median > 0.5).
    true_eps, r = 1.0, 1000
    rng = np.random.default_rng(7)
    correct = rng.binomial(r, expit(true_eps), size=300)
    bounds = np.array([epsilon_lower_bound(guesses=r, correct=int(v)) for v in correct])
    assert np.mean(bounds > true_eps) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300)
    assert np.median(bounds) > 0.5


def test_score_guesses_counts_by_hand() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.5, 0.2])
    included = np.array([True, False, False, True, True, False])
    # Top 2 (0.9 in, 0.8 out) -> 1 right; bottom 2 (0.2 out, 0.1 out) -> 2 right.
    assert score_guesses(scores, included, 2, 2) == (4, 3)
    assert score_guesses(scores, included, 0, 0) == (0, 0)
    # A loss is passed negated: lowest loss = most likely trained on.
    loss = np.array([0.1, 5.0, 0.2])
    assert score_guesses(-loss, np.array([True, False, True]), 2, 1) == (3, 3)


def test_perfect_scores_reach_the_closed_form_bound() -> None:
    included = canary_assignment(1000, seed=1)
    scores = included.astype(float)  # no noise: a non-private run leaks everything
    k_in = int(included.sum())
    guesses, correct = score_guesses(scores, included, k_in, 1000 - k_in)
    assert (guesses, correct) == (1000, 1000)
    assert epsilon_lower_bound(guesses=guesses, correct=correct) == pytest.approx(
        5.809068, abs=1e-6
    )


def test_best_lower_bound_pays_for_scanning_k() -> None:
    rng = np.random.default_rng(3)
    included = canary_assignment(400, seed=3)
    scores = included + rng.normal(0, 0.7, 400)
    ks = [(25, 25), (50, 50), (100, 100)]
    result = best_lower_bound(scores, included, confidence=0.95, k_values=ks)
    # Each k is tested at 1 - 0.05/3; the chosen one's bound is recomputed at that level.
    assert result["tests"] == 3
    assert result["per_test_confidence"] == pytest.approx(1 - 0.05 / 3)
    g, c = score_guesses(scores, included, result["k_plus"], result["k_minus"])
    assert (g, c) == (result["guesses"], result["correct"])
    assert result["epsilon_lower_bound"] == epsilon_lower_bound(
        guesses=g, correct=c, confidence=1 - 0.05 / 3
    )
    assert result["epsilon_lower_bound"] < epsilon_lower_bound(guesses=g, correct=c)
    assert result["method"] == "one_run" and result["canaries"] == 400


def test_canary_assignment_is_seeded_and_about_half() -> None:
    a = canary_assignment(10_000, seed=5)
    assert a.dtype == bool and a.shape == (10_000,)
    assert np.array_equal(a, canary_assignment(10_000, seed=5))
    assert not np.array_equal(a, canary_assignment(10_000, seed=6))
    assert abs(a.mean() - 0.5) < 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guesses": 10, "correct": 11}, "correct must be in"),
        ({"guesses": -1, "correct": 0}, "guesses must be an integer >= 0"),
        ({"guesses": 10, "correct": 5, "confidence": 1.0}, "confidence must be in"),
        ({"guesses": 10, "correct": 5, "delta": 1e-5}, "canaries"),
        ({"guesses": 10, "correct": 5, "delta": 1e-5, "canaries": 9}, "canaries must be >="),
        ({"guesses": 10, "correct": 5, "delta": 1.5, "canaries": 20}, "delta must be in"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(AuditInputError, match=message):
        epsilon_lower_bound(**kwargs)


def test_bad_score_inputs_are_named() -> None:
    with pytest.raises(AuditInputError, match="same length"):
        score_guesses(np.zeros(3), np.zeros(4, dtype=bool), 1, 1)
    with pytest.raises(AuditInputError, match="boolean"):
        score_guesses(np.zeros(3), np.zeros(3), 1, 1)
    with pytest.raises(AuditInputError, match="<= the number of canaries 3"):
        score_guesses(np.zeros(3), np.zeros(3, dtype=bool), 2, 2)
    with pytest.raises(AuditInputError, match="finite"):
        score_guesses(np.array([0.0, np.nan]), np.zeros(2, dtype=bool), 1, 0)
    with pytest.raises(AuditInputError, match="at least one"):
        best_lower_bound(np.zeros(3), np.zeros(3, dtype=bool), k_values=[])
    with pytest.raises(AuditInputError, match="m must be"):
        canary_assignment(0, seed=1)
