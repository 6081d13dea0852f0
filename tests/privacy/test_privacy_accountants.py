"""Accountant maths: published golden values, cross-checks between accountants, validation.

Golden values and where they come from (each checked for the RDP->(eps, delta)
conversion it used; fedsim, Opacus >= 1.1 and dp-accounting use the improved
conversion of Balle et al. 2020, Theorem 21):

- Opacus, ``opacus/tests/accountants_test.py`` (pytorch/opacus): RDP 7.32911117143,
  PRV 6.777395712150674, GDP in (6.59, 6.6), and get_noise_multiplier results.
- TensorFlow Privacy, ``tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py``
  (tensorflow/privacy @ 2cd46dbb995dfee13162f4e4a7b40c1940c9c6f0): values computed
  with dp-accounting's RdpAccountant (improved conversion) and PLDAccountant.
  The 2019 versions of the same test (0.941870567, 1.70928734) used Mironov's
  original conversion ``eps = min_a rdp(a) - log(delta) / (a - 1)``, which is
  larger; we reproduce them with that conversion rather than use them as goldens.
- dp-accounting 0.6.0, ``dp_accounting/rdp/rdp_privacy_accountant_test.py`` (ships
  with the package): the conversion of a constant RDP curve, and the Gaussian
  noise that gives exactly (1, 1e-6) through the conversion.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from scipy import optimize
from scipy.stats import norm

from fedsim.privacy import (
    ACCOUNTANTS,
    PrivacyError,
    epsilon,
    epsilon_of_history,
    noise_multiplier_for,
)
from fedsim.privacy.accountants import RDP_ORDERS, epsilon_from_rdp, rdp_vector

# --------------------------------------------------------------------------- goldens


def test_rdp_golden_from_opacus() -> None:
    # opacus/tests/accountants_test.py::test_rdp_accountant: steps = int(90 / 0.04) = 2250.
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5)
    assert eps == pytest.approx(7.32911117143, abs=1e-9)


def test_prv_golden_from_opacus() -> None:
    # opacus/tests/accountants_test.py::test_prv_accountant: steps = int(90 // 0.04) = 2249
    # (floor division of floats: 2249, not 2250).
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2249, delta=1e-5, accountant="prv")
    assert eps == pytest.approx(6.777395712150674, abs=1e-7)


def test_gdp_golden_from_opacus() -> None:
    # opacus/tests/accountants_test.py::test_gdp_accountant asserts 6.59 < eps < 6.6.
    eps = epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2249, delta=1e-5, accountant="gdp")
    assert 6.59 < eps < 6.6


@pytest.mark.parametrize(
    ("n", "batch_size", "noise", "epochs", "delta", "expected"),
    [
        # compute_dp_sgd_privacy_test.py Test0 and Test1 (optimal orders 19 and 13, which
        # are in both TF Privacy's and Opacus' order lists, so the minima coincide).
        (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
        (100000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
    ],
)
def test_rdp_golden_from_tensorflow_privacy(
    n: int, batch_size: int, noise: float, epochs: int, delta: float, expected: float
) -> None:
    q = batch_size / n
    steps = math.ceil(epochs * n / batch_size)  # as compute_dp_sgd_privacy does
    eps = epsilon(noise_multiplier=noise, sample_rate=q, steps=steps, delta=delta)
    assert eps == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("n", "batch_size", "noise", "epochs", "delta", "old_value"),
    [
        (60000, 150, 1.3, 15, 1e-5, 0.941870567),
        (100000, 100, 1.0, 30, 1e-7, 1.70928734),
    ],
)
def test_old_tensorflow_privacy_values_are_the_older_conversion(
    n: int, batch_size: int, noise: float, epochs: int, delta: float, old_value: float
) -> None:
    # The 2019 test values are Mironov's conversion of the very same RDP curve: the
    # curve is right, only the (looser) conversion differs. Not goldens for fedsim.
    q = batch_size / n
    rdp = rdp_vector(
        noise_multiplier=noise, sample_rate=q, steps=math.ceil(epochs * n / batch_size)
    )
    orders = np.array(RDP_ORDERS)
    mironov = float(np.min(rdp - math.log(delta) / (orders - 1)))
    assert mironov == pytest.approx(old_value, abs=1e-8)
    assert epsilon_from_rdp(rdp, delta=delta) < mironov


def test_pld_golden_from_tensorflow_privacy() -> None:
    # compute_dp_sgd_privacy_test.py 'no_microbatching_with_subsampling_pld':
    # num_epochs 1.2, noise 0.7, q 1e-2 -> ceil(1.2 / 1e-2) = 120 steps, delta 1e-5.
    eps = epsilon(noise_multiplier=0.7, sample_rate=1e-2, steps=120, delta=1e-5, accountant="pld")
    assert eps == pytest.approx(2.4612381, abs=1e-7)


def test_rdp_close_to_tensorflow_privacy_at_fractional_optimum() -> None:
    # Same test, '..._rdp': 3.2392676. The optimum is the fractional order 4.4, where
    # dp-accounting's RDP bound is ~1e-4 (relative) above Opacus' (integer orders agree
    # exactly, see the goldens above), so only close agreement is expected here.
    eps = epsilon(noise_multiplier=0.7, sample_rate=1e-2, steps=120, delta=1e-5)
    assert eps == pytest.approx(3.2392676, rel=1e-4)
    assert eps <= 3.2392676


def test_conversion_golden_from_dp_accounting() -> None:
    # rdp_privacy_accountant_test.py::test_compute_epsilon_delta_pure_dp: a constant RDP
    # curve 1.1 over orders 2..32 at delta 1e-5 gives 1.32783806176 (order 32).
    orders = list(range(2, 33))
    eps = epsilon_from_rdp([1.1] * len(orders), delta=1e-5, orders=orders)
    assert eps == pytest.approx(1.32783806176, abs=1e-10)
    # And by hand: r + log(1 - 1/a) - log(delta * a) / (a - 1) at a = 32.
    assert eps == pytest.approx(1.1 + math.log(31 / 32) - math.log(1e-5 * 32) / 31, abs=1e-12)


def test_gaussian_calibrated_to_epsilon_one_by_dp_accounting() -> None:
    # rdp_privacy_accountant_test.py::test_compute_epsilon_delta_gaussian: noise 4.530877117
    # on the unsampled Gaussian gives exactly (1, 1e-6) over a fine order grid; Opacus'
    # orders are a subset of that grid, so the minimum can only be (slightly) larger.
    eps = epsilon(noise_multiplier=4.530877117, sample_rate=1.0, steps=1, delta=1e-6)
    assert 1.0 <= eps <= 1.0 + 1e-5


def _exact_gaussian_epsilon(noise: float, delta: float) -> float:
    # Balle & Wang 2018, Theorem 8: the Gaussian mechanism with sensitivity 1 and
    # std sigma is (eps, delta)-DP iff Phi(1/(2s) - eps*s) - e^eps Phi(-1/(2s) - eps*s) <= delta.
    def gap(eps: float) -> float:
        return (
            norm.cdf(0.5 / noise - eps * noise)
            - math.exp(eps) * norm.cdf(-0.5 / noise - eps * noise)
            - delta
        )

    return float(optimize.brentq(gap, 0.0, 50.0, xtol=1e-12))


def test_tight_accountants_match_the_exact_gaussian_mechanism() -> None:
    exact = _exact_gaussian_epsilon(4.530877117, 1e-6)
    assert exact == pytest.approx(0.9274, abs=1e-3)  # well below RDP's 1.0
    args = dict(noise_multiplier=4.530877117, sample_rate=1.0, steps=1, delta=1e-6)
    pld = epsilon(**args, accountant="pld")
    prv = epsilon(**args, accountant="prv")
    # Both are upper bounds: PLD's discretisation is pessimistic and tiny, PRV's
    # error is eps_error = 0.01.
    assert exact - 1e-9 <= pld <= exact + 1e-3
    assert exact - 1e-9 <= prv <= exact + 0.011
    assert epsilon(**args, accountant="rdp") > prv


# --------------------------------------------------------------------------- cross-checks


def test_accountants_agree_on_a_typical_setting() -> None:
    args = dict(noise_multiplier=1.1, sample_rate=0.01, steps=1000, delta=1e-5)
    eps = {name: epsilon(**args, accountant=name) for name in ACCOUNTANTS}
    # PRV and PLD are both tight: within 2 % of each other.
    assert eps["prv"] == pytest.approx(eps["pld"], rel=0.02)
    # RDP is a valid but looser upper bound: above the tight ones, by less than 15 %.
    assert eps["pld"] < eps["rdp"] < 1.15 * eps["pld"]
    assert eps["prv"] < eps["rdp"]
    # GDP (a CLT approximation) under-estimates here, as Opacus warns it can.
    assert eps["gdp"] < eps["pld"]


def _gdp_closed_form(noise: float, q: float, steps: int, delta: float) -> float:
    # Dong, Roth & Su 2019: Poisson-subsampled Gaussian ~ mu-GDP with
    # mu = q * sqrt(T * (e^{1/z^2} - 1)); mu-GDP is (eps, delta)-DP with
    # delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (their Corollary 2.13).
    mu = q * math.sqrt(steps * (math.exp(noise**-2) - 1))

    def gap(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return float(optimize.brentq(gap, 0.0, 100.0, xtol=1e-12))


@pytest.mark.parametrize(
    ("noise", "q", "steps", "delta"),
    [(1.1, 0.01, 1000, 1e-5), (1.5, 0.04, 2249, 1e-5), (0.8, 0.002, 20000, 1e-6)],
)
def test_gdp_matches_the_closed_form(noise: float, q: float, steps: int, delta: float) -> None:
    eps = epsilon(noise_multiplier=noise, sample_rate=q, steps=steps, delta=delta, accountant="gdp")
    assert eps == pytest.approx(_gdp_closed_form(noise, q, steps, delta), rel=1e-6)


def test_gdp_outside_opacus_bracket() -> None:
    # opacus' brentq on [0, 500] raises outside it; fedsim answers the two ends.
    huge_noise = dict(noise_multiplier=50.0, sample_rate=0.001, steps=1, delta=1e-5)
    assert epsilon(**huge_noise, accountant="gdp") == 0.0
    tiny_noise = dict(noise_multiplier=0.1, sample_rate=0.5, steps=10, delta=1e-5)
    assert epsilon(**tiny_noise, accountant="gdp") == math.inf


def test_rdp_history_equals_opacus_accountant() -> None:
    history = [(1.0, 0.01, 300), (1.3, 0.02, 150), (1.0, 0.01, 50), (0.9, 0.005, 1000)]
    accountant = RDPAccountant()
    accountant.history = list(history)
    expected = accountant.get_epsilon(delta=1e-5)
    assert epsilon_of_history(history, delta=1e-5) == pytest.approx(expected, rel=1e-12)
    # Sum of vectors = composition.
    total = sum(rdp_vector(noise_multiplier=z, sample_rate=q, steps=n) for z, q, n in history)
    assert epsilon_from_rdp(total, delta=1e-5) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("module", "name", "kwargs"),
    [
        ("rdp", "RDPAccountant", {}),
        ("prv", "PRVAccountant", {}),
        ("gdp", "GaussianAccountant", {"poisson": True}),
    ],
)
def test_torch_free_accountants_are_opacus_own(module: str, name: str, kwargs: dict) -> None:
    # fedsim runs opacus' accountant files without torch, under another package name and
    # with a base class of its own (fedsim.privacy.accountants._torch_free_accountants):
    # same state after construction, same epsilons as opacus' accountants.
    import importlib

    import opacus.accountants

    from fedsim.privacy.accountants import _MIRROR, _torch_free_accountants

    _torch_free_accountants()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDP's "experimental" notice, on construction
        mirrored = getattr(importlib.import_module(f"{_MIRROR}.{module}"), name)()
        real = getattr(opacus.accountants, name)()
    assert type(mirrored).__module__ == f"{_MIRROR}.{module}"
    assert vars(mirrored) == vars(real)
    histories = [[(1.5, 0.178, 12)], [(1.0, 0.01, 300)]]
    if module != "gdp":  # GDP takes one (z, q) only
        histories.append([(1.0, 0.01, 300), (1.3, 0.02, 150)])
    for history in histories:
        mirrored.history, real.history = list(history), list(history)
        with np.errstate(divide="ignore"):
            assert mirrored.get_epsilon(1e-5, **kwargs) == real.get_epsilon(1e-5, **kwargs)


def test_history_order_and_splitting_do_not_matter() -> None:
    split = [(1.1, 0.02, 100), (0.9, 0.01, 40), (1.1, 0.02, 200)]
    merged = [(0.9, 0.01, 40), (1.1, 0.02, 300)]
    for name in ("rdp", "prv"):
        assert epsilon_of_history(split, delta=1e-5, accountant=name) == pytest.approx(
            epsilon_of_history(merged, delta=1e-5, accountant=name), rel=1e-12
        )


def test_heterogeneous_history_pld_close_to_prv() -> None:
    history = [(1.5, 0.01, 100), (2.0, 0.02, 50)]
    pld = epsilon_of_history(history, delta=1e-5, accountant="pld")
    prv = epsilon_of_history(history, delta=1e-5, accountant="prv")
    rdp = epsilon_of_history(history, delta=1e-5, accountant="rdp")
    assert pld == pytest.approx(prv, abs=0.015)  # PRV's eps_error is 0.01 (absolute)
    assert pld < rdp


def test_gdp_refuses_a_heterogeneous_history() -> None:
    with pytest.raises(PrivacyError, match="constant noise_multiplier and sample_rate"):
        epsilon_of_history([(1.0, 0.01, 10), (1.2, 0.01, 10)], delta=1e-5, accountant="gdp")
    # Equal entries are merged, so a constant history split over rounds is fine.
    split = epsilon_of_history([(1.0, 0.01, 10), (1.0, 0.01, 20)], delta=1e-5, accountant="gdp")
    assert split == epsilon(
        noise_multiplier=1.0, sample_rate=0.01, steps=30, delta=1e-5, accountant="gdp"
    )


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", ACCOUNTANTS)
def test_no_steps_is_zero_and_no_noise_is_infinite(name: str) -> None:
    assert epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5, accountant=name) == 0
    assert epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=0, delta=1e-5, accountant=name) == 0
    no_noise = epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=1, delta=1e-5, accountant=name)
    assert no_noise == math.inf
    assert epsilon_of_history([], delta=1e-5, accountant=name) == 0.0


def test_rdp_vector_is_cached_read_only_and_zero_for_no_steps() -> None:
    a = rdp_vector(noise_multiplier=1.2, sample_rate=0.03, steps=7)
    b = rdp_vector(noise_multiplier=1.2, sample_rate=0.03, steps=7)
    assert a is b
    assert a.shape == (len(RDP_ORDERS),)
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 0.0
    assert not rdp_vector(noise_multiplier=0.0, sample_rate=0.5, steps=0).any()
    assert np.isinf(rdp_vector(noise_multiplier=0.0, sample_rate=0.5, steps=1)).all()
    assert epsilon_from_rdp(
        rdp_vector(noise_multiplier=0.0, sample_rate=0.5, steps=1), delta=0.1
    ) == (math.inf)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        epsilon(1.1, 0.01, 100, 1e-5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        noise_multiplier_for(1.0, 1e-5, 0.01, 100)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(noise_multiplier=-0.1), r"noise_multiplier must be a finite number >= 0, got -0\.1"),
        (dict(noise_multiplier=math.nan), "noise_multiplier must be a finite number >= 0"),
        (dict(noise_multiplier=True), "noise_multiplier must be a finite number >= 0"),
        (dict(sample_rate=0.0), r"sample_rate must be a number in \(0, 1\], got 0\.0"),
        (dict(sample_rate=1.5), r"sample_rate must be a number in \(0, 1\], got 1\.5"),
        (dict(steps=-1), "steps must be an integer >= 0, got -1"),
        (dict(steps=2.5), "steps must be an integer >= 0, got 2.5"),
        (dict(delta=0.0), r"delta must be a number in \(0, 1\), got 0\.0"),
        (dict(delta=1.0), r"delta must be a number in \(0, 1\), got 1\.0"),
        (dict(accountant="moments"), r"one of \('rdp', 'prv', 'gdp', 'pld'\), got 'moments'"),
    ],
)
def test_bad_arguments_name_the_value_and_the_range(override: dict, message: str) -> None:
    args = dict(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5)
    args.update(override)
    with pytest.raises(PrivacyError, match=message):
        epsilon(**args)


def test_privacy_error_is_a_value_error() -> None:
    assert issubclass(PrivacyError, ValueError)


@pytest.mark.parametrize(
    "history",
    [[(1.0, 0.01)], [(1.0, 0.01, 10), (1.0, 2.0, 10)], "rdp", [(1.0, 0.01, -3)]],
)
def test_bad_history_entries(history: object) -> None:
    with pytest.raises(PrivacyError, match="history"):
        epsilon_of_history(history, delta=1e-5)  # type: ignore[arg-type]


def test_epsilon_from_rdp_validates() -> None:
    with pytest.raises(PrivacyError, match="orders"):
        epsilon_from_rdp([0.1, 0.2], delta=1e-5)
    with pytest.raises(PrivacyError, match=">= 0"):
        epsilon_from_rdp([-1.0] * len(RDP_ORDERS), delta=1e-5)
    with pytest.raises(PrivacyError, match="orders > 1"):
        epsilon_from_rdp([0.1, 0.2], delta=1e-5, orders=[1.0, 2.0])
    # No mechanism ran: exactly 0, not the conversion's floor (~0.1 at delta 1e-5).
    assert epsilon_from_rdp(np.zeros(len(RDP_ORDERS)), delta=1e-5) == 0.0


def test_pld_without_dp_accounting_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'fedsim\[audit\]'"):
        epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5, accountant="pld")
    # The other accountants do not need it.
    assert epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5) > 0


# --------------------------------------------------------------------------- noise search


@pytest.mark.parametrize(
    ("accountant", "steps", "opacus_z"),
    [
        # opacus/tests/accountants_test.py: target eps 8, delta 1e-5, q 0.04; epochs=90
        # means int(90 / 0.04) = 2250 steps. Opacus bisects from [0, 20] and fedsim from
        # [1, 2], so the two land on different points of the same 0.01-wide epsilon band.
        ("rdp", 2250, 1.416),
        ("rdp", 2000, 1.3562),
        ("gdp", 2250, 1.3232421875),
    ],
)
def test_noise_multiplier_agrees_with_opacus(accountant: str, steps: int, opacus_z: float) -> None:
    z = noise_multiplier_for(
        target_epsilon=8.0, delta=1e-5, sample_rate=0.04, steps=steps, accountant=accountant
    )
    assert z == pytest.approx(opacus_z, abs=1e-3)
    eps = epsilon(
        noise_multiplier=z, sample_rate=0.04, steps=steps, delta=1e-5, accountant=accountant
    )
    assert 8.0 - 0.01 <= eps <= 8.0


def test_noise_multiplier_for_a_tight_accountant() -> None:
    args = dict(target_epsilon=2.0, delta=1e-5, sample_rate=0.04, steps=200)
    z = noise_multiplier_for(**args, accountant="prv", epsilon_tolerance=0.05)
    eps = epsilon(noise_multiplier=z, sample_rate=0.04, steps=200, delta=1e-5, accountant="prv")
    assert 2.0 - 0.05 <= eps <= 2.0
    # A tighter accountant needs less noise for the same budget.
    assert z < noise_multiplier_for(**args, accountant="rdp")


def test_noise_multiplier_edge_cases() -> None:
    assert noise_multiplier_for(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=0) == 0.0
    # RDP's conversion over fixed orders cannot go below ~0.103 at delta 1e-5.
    with pytest.raises(PrivacyError, match="unreachable"):
        noise_multiplier_for(target_epsilon=0.05, delta=1e-5, sample_rate=0.04, steps=10)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(PrivacyError, match="target_epsilon"):
            noise_multiplier_for(target_epsilon=bad, delta=1e-5, sample_rate=0.1, steps=10)
    with pytest.raises(PrivacyError, match="epsilon_tolerance"):
        noise_multiplier_for(
            target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=10, epsilon_tolerance=0.0
        )
