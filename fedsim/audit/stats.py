"""Population statistics that count never-sampled clients without listing them.

A population of millions where a few thousand clients were sampled has mostly
zero epsilons; these helpers take the non-zero values plus a count of zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Histogram bins of the per-client epsilon distribution.
HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class Spread:
    """Minimum, median and maximum of a population's values."""

    min: float
    median: float
    max: float


@dataclass(frozen=True)
class Histogram:
    """Counts of finite values in ``len(counts)`` bins between ``edges``, plus infinities.

    The last bin includes its right edge (numpy's convention); ``total`` is the
    population size.
    """

    edges: list[float]
    counts: list[int]
    infinite: int

    @property
    def total(self) -> int:
        return sum(self.counts) + self.infinite


def spread_with_zeros(values: Sequence[float], zeros: int) -> Spread:
    """Spread of ``values`` plus ``zeros`` extra zeros, without building the long list.

    Epsilons are >= 0, so the zeros of never-sampled clients sort first.

    Raises:
        ValueError: no values at all.
    """
    ordered = sorted(values)
    n = len(ordered) + zeros
    if n == 0:
        raise ValueError("a spread needs at least one value")

    def at(i: int) -> float:
        return 0.0 if i < zeros else float(ordered[i - zeros])

    lo, hi = at((n - 1) // 2), at(n // 2)
    median = lo if lo == hi else (lo + hi) / 2.0
    return Spread(min=at(0), median=median, max=at(n - 1))


def histogram_with_zeros(
    values: Sequence[float], zeros: int, bins: int = HISTOGRAM_BINS
) -> Histogram:
    """Histogram of ``values`` plus ``zeros`` zeros; infinite values are counted apart."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    infinite = len(values) - finite.size
    if finite.size == 0 and zeros == 0:
        return Histogram(edges=[], counts=[], infinite=infinite)
    lo = 0.0 if zeros else float(finite.min())
    hi = float(finite.max()) if finite.size else 0.0
    hi = max(hi, lo)
    if hi == lo:
        # Every finite value is equal: one bin of zero width says so exactly.
        return Histogram(edges=[lo, hi], counts=[finite.size + zeros], infinite=infinite)
    try:
        counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    except ValueError:
        # A range too narrow to split into `bins` floats (subnormal spreads): one bin.
        counts, edges = np.array([finite.size]), np.array([lo, hi])
    counts[0] += zeros  # lo == 0 whenever zeros > 0, and 0 falls in the first bin
    return Histogram(
        edges=[float(e) for e in edges], counts=[int(c) for c in counts], infinite=infinite
    )
