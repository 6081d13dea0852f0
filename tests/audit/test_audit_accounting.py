"""The audit's maths: spreads, histograms, accountant disagreement."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.audit.accounting import EpsilonCache, history_key
from fedsim.audit.crosscheck import (
    HETEROGENEOUS,
    accountant_problems,
    compare_accountants,
    relative_disagreement,
)
from fedsim.audit.stats import histogram_with_zeros, spread_with_zeros
from fedsim.privacy import epsilon_of_history

eps_lists = st.lists(st.floats(min_value=0.0, max_value=1e3), max_size=30)
# No deadline: the machine is shared, and a slow example is not a wrong one.
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(eps_lists, st.integers(min_value=0, max_value=30))
def test_spread_with_zeros_equals_the_long_list(values: list[float], zeros: int) -> None:
    full = values + [0.0] * zeros
    if not full:
        with pytest.raises(ValueError):
            spread_with_zeros(values, zeros)
        return
    s = spread_with_zeros(values, zeros)
    assert (s.min, s.max) == (min(full), max(full))
    assert s.median == pytest.approx(statistics.median(full), rel=1e-12, abs=1e-300)


@FAST
@given(eps_lists, st.integers(min_value=0, max_value=30), st.integers(0, 3))
def test_histogram_total_is_the_population(values: list[float], zeros: int, infs: int) -> None:
    hist = histogram_with_zeros(values + [math.inf] * infs, zeros)
    assert hist.total == len(values) + zeros + infs
    assert hist.infinite == infs
    if hist.counts:
        assert len(hist.edges) == len(hist.counts) + 1
        assert hist.edges[0] <= min(values + [0.0] * bool(zeros))


def test_histogram_of_equal_values_is_one_bin() -> None:
    hist = histogram_with_zeros([2.5, 2.5, 2.5], 0)
    assert hist.edges == [2.5, 2.5] and hist.counts == [3]


def test_relative_disagreement() -> None:
    assert relative_disagreement({"rdp": 2.2, "prv": 2.0}) == (pytest.approx(0.1), ("prv", "rdp"))
    assert relative_disagreement({"rdp": 2.0, "prv": 2.0, "gdp": None}) == (0.0, ("rdp", "rdp"))
    assert relative_disagreement({"rdp": 1.0, "gdp": None}) == (0.0, None)
    assert relative_disagreement({"rdp": 0.5, "gdp": 0.0})[0] == math.inf
    assert relative_disagreement({"rdp": math.inf, "prv": 3.0})[0] == math.inf
    rel, pair = relative_disagreement({"rdp": 3.0, "prv": 2.5, "pld": 2.4})
    assert rel == pytest.approx(0.6 / 2.4) and pair == ("pld", "rdp")


def test_history_key_merges_equal_mechanisms() -> None:
    key = history_key([(1.0, 0.1, 5), (2.0, 0.1, 0), (1.0, 0.1, 7), (0.5, 0.2, 1)])
    assert key == ((0.5, 0.2, 1), (1.0, 0.1, 12))


def _row(history: list[tuple[float, float, int]], delta: float, cache: EpsilonCache | None = None):  # type: ignore[no-untyped-def]
    return compare_accountants(
        history,
        subject="h",
        level="user",
        client=None,
        accountants=["rdp", "prv", "pld", "gdp"],
        delta=delta,
        cache=cache or EpsilonCache(),
    )


def test_rdp_looseness_is_reported_not_flagged() -> None:
    # digits_user_dp: z = 1, q = 0.2, 20 releases, delta = 1e-4. RDP 6.41 is ~16 % above
    # PLD 5.51 and PRV 5.52: the expected looseness of RDP's conversion, not a bug.
    history = [(1.0, 0.2, 20)]
    row = _row(history, 1e-4)
    rdp, prv, pld = (
        epsilon_of_history(history, delta=1e-4, accountant=a) for a in ("rdp", "prv", "pld")
    )
    assert row.epsilon["rdp"] == rdp and row.epsilon["pld"] == pld
    assert 0.10 < (rdp - pld) / pld < 0.17
    assert not row.flagged and row.problems == ()
    assert row.tightest == "pld" and row.tightest_epsilon == pld == min(rdp, prv, pld)
    assert row.looseness["rdp"] == pytest.approx((rdp - pld) / pld)
    assert row.looseness["prv"] == pytest.approx((prv - pld) / pld)
    # GDP is an approximation (4.60 here, below the tight bounds): never the tightest bound
    assert row.epsilon["gdp"] < pld and "gdp" not in row.looseness


class _Swapped(EpsilonCache):
    """A cache where one accountant answers for another history (a planted bug)."""

    def __init__(self, name: str, history: list[tuple[float, float, int]]) -> None:
        super().__init__()
        self.name, self.history = name, history

    def epsilon(self, history, *, delta, accountant):  # type: ignore[no-untyped-def, override]
        if accountant == self.name:
            history = self.history
        return super().epsilon(history, delta=delta, accountant=accountant)


def test_conservative_accountant_below_a_tight_one_is_flagged() -> None:
    # RDP computed at z = 1.2 instead of 1.0 (a bug): 4.67 < PRV's 5.52 and PLD's 5.51.
    row = _row([(1.0, 0.2, 20)], 1e-4, _Swapped("rdp", [(1.2, 0.2, 20)]))
    assert row.epsilon["rdp"] < row.epsilon["pld"]
    assert row.flagged and len(row.problems) == 2
    assert all("rdp (4.66958) is below" in p for p in row.problems)
    # Within numerical tolerance (PRV's eps_error) RDP under PRV is not a problem.
    near = {"rdp": 5.515, "prv": 5.5248, "pld": 5.5143}
    assert accountant_problems(near) == ()


def test_tight_accountants_apart_by_more_than_two_percent_are_flagged() -> None:
    # PRV composing 22 releases instead of 20: ~5 % above PLD.
    row = _row([(1.0, 0.2, 20)], 1e-4, _Swapped("prv", [(1.0, 0.2, 22)]))
    gap = (row.epsilon["prv"] - row.epsilon["pld"]) / row.epsilon["pld"]
    assert gap > 0.02
    assert row.flagged and any("prv" in p and "pld" in p for p in row.problems)
    # Real PRV and PLD on the same history agree within 0.3 %: not flagged.
    assert not _row([(1.0, 0.2, 20)], 1e-4).flagged


def test_close_accountants_are_not_flagged() -> None:
    # One unsampled Gaussian release: RDP and PRV land within ~8 %.
    row = compare_accountants(
        [(1.0, 1.0, 1)],
        subject="quiet",
        level="sample",
        client=0,
        accountants=["rdp", "prv"],
        delta=1e-5,
        cache=EpsilonCache(),
    )
    assert not row.flagged, row


def test_gdp_refusal_becomes_a_note() -> None:
    row = compare_accountants(
        [(1.0, 0.1, 5), (1.5, 0.1, 5)],
        subject="mixed",
        level="sample",
        client=3,
        accountants=["rdp", "gdp"],
        delta=1e-5,
        cache=EpsilonCache(),
    )
    assert row.epsilon["gdp"] is None and row.notes == {"gdp": HETEROGENEOUS}
    assert row.epsilon["rdp"] == epsilon_of_history([(1.0, 0.1, 5), (1.5, 0.1, 5)], delta=1e-5)
