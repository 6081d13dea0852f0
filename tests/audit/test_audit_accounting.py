"""The audit's maths: spreads, histograms, accountant disagreement."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.audit.accounting import EpsilonCache, history_key
from fedsim.audit.crosscheck import (
    DISAGREEMENT_WARNING,
    HETEROGENEOUS,
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


def test_crafted_disagreement_between_rdp_and_prv_is_flagged() -> None:
    # Many steps at a high sampling rate: RDP's conversion is >10 % looser than PRV.
    history = [(1.0, 2 / 9, 60)]
    row = compare_accountants(
        history,
        subject="crafted",
        level="sample",
        client=0,
        accountants=["rdp", "prv", "gdp"],
        delta=1e-5,
        cache=EpsilonCache(),
    )
    rdp = epsilon_of_history(history, delta=1e-5, accountant="rdp")
    prv = epsilon_of_history(history, delta=1e-5, accountant="prv")
    assert row.epsilon["rdp"] == rdp and row.epsilon["prv"] == prv
    values = [v for v in row.epsilon.values() if v is not None]
    assert row.disagreement == pytest.approx((max(values) - min(values)) / min(values))
    assert (rdp - prv) / prv > DISAGREEMENT_WARNING
    assert row.flagged


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
