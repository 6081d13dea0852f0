"""Epsilon of the Poisson-subsampled Gaussian mechanism (DP-SGD), by name of accountant.

Every function here is pure maths over ``(noise_multiplier, sample_rate, steps)``
triples, the format of ``opacus.accountants.IAccountant.history``. Adjacency is
add/remove-one everywhere, which is what Opacus' accountants assume; the state
(who spent what) lives in :mod:`fedsim.privacy.ledger`.

Accountants (:data:`ACCOUNTANTS`):

- ``"rdp"``: Opacus ``RDPAccountant`` (Renyi DP over :data:`RDP_ORDERS`, converted
  with Balle et al. 2020). An upper bound, a little loose; fast, and composition
  is a sum of vectors (:func:`rdp_vector`, :func:`epsilon_from_rdp`).
- ``"prv"``: Opacus ``PRVAccountant`` (Gopi et al. 2021); numerically tight upper
  bound (``eps_error=0.01``).
- ``"gdp"``: Opacus ``GaussianAccountant`` (CLT approximation, Dong et al.); can
  *under*-estimate, and only supports a constant ``(noise_multiplier,
  sample_rate)``.
- ``"pld"``: Google's ``dp_accounting`` PLD accountant (tight); optional extra
  ``pip install 'fedsim[audit]'``.

Example:
    >>> round(epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5), 6)
    7.329111
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fedsim.privacy._checks import (
    check_delta,
    check_noise_multiplier,
    check_positive,
    check_sample_rate,
    check_steps,
)
from fedsim.privacy.errors import PrivacyError

__all__ = [
    "ACCOUNTANTS",
    "MAX_NOISE_MULTIPLIER",
    "RDP_ORDERS",
    "PrivacyError",
    "epsilon",
    "epsilon_from_rdp",
    "epsilon_of_history",
    "noise_multiplier_for",
    "rdp_vector",
]

#: One accounting entry: (noise_multiplier, sample_rate, steps), as in opacus' history.
HistoryEntry = tuple[float, float, int]

#: RDP orders of the fast path: Opacus' ``RDPAccountant.DEFAULT_ALPHAS``, so results equal
#: ``RDPAccountant``'s. Written out, not read from opacus: importing opacus imports torch
#: (seconds), and reading a run's files must not (a test checks the two lists agree).
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
)
_ORDERS = np.array(RDP_ORDERS, dtype=np.float64)
_ORDERS.flags.writeable = False

#: Largest noise multiplier :func:`noise_multiplier_for` tries (Opacus uses the same cap).
MAX_NOISE_MULTIPLIER = 1e6

# opacus' GDP conversion solves for epsilon with brentq on [0, 500].
_GDP_MAX_EPSILON = 500.0

# Caches hold read-only arrays; sizes bound memory to a few tens of MB (150 floats each).
_CACHE_SIZE = 16384


# --------------------------------------------------------------------------- opacus


#: Where the torch-free copy of ``opacus.accountants`` lives in ``sys.modules``.
_MIRROR = "fedsim.privacy._opacus_accountants"


class _IAccountant:
    """The part of ``opacus.accountants.accountant.IAccountant`` its accountants' maths uses.

    opacus' base class also holds the optimizer hook and state-dict helpers, which
    import ``opacus.optimizers`` and so torch; epsilons need only ``history``, which
    its ``__init__`` sets (tests/privacy checks the copies agree with opacus' own).
    """

    def __init__(self) -> None:
        self.history: list[HistoryEntry] = []


@cache
def _torch_free_accountants() -> ModuleType:
    """opacus' ``accountants`` package loaded from its files, its base class swapped.

    ``import opacus.accountants`` runs ``opacus/__init__``, which imports torch (seconds);
    the accountants themselves (RDP, PRV, GDP) are numpy and scipy. So the package's
    directory is mounted under another name with :class:`_IAccountant` as its
    ``accountant`` module: the same files run, so the same numbers as opacus.
    """
    spec = importlib.util.find_spec("opacus")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fedsim's accountants need opacus: pip install opacus")
    package = ModuleType(_MIRROR, "opacus.accountants without torch (fedsim.privacy)")
    package.__path__ = [str(Path(next(iter(spec.submodule_search_locations))) / "accountants")]
    package.__package__ = _MIRROR
    base = ModuleType(f"{_MIRROR}.accountant")
    base.IAccountant = _IAccountant  # type: ignore[attr-defined]
    sys.modules[_MIRROR] = package
    sys.modules[base.__name__] = base
    return package


def _opacus_module(name: str) -> ModuleType:
    """``opacus.accountants.<name>`` ("prv", "analysis.rdp", ...), without importing torch.

    Where opacus is imported already (a run), its own module is used.
    """
    if "opacus.accountants" in sys.modules:
        return importlib.import_module(f"opacus.accountants.{name}")
    _torch_free_accountants()
    return importlib.import_module(f"{_MIRROR}.{name}")


def _rdp_analysis() -> ModuleType:
    return _opacus_module("analysis.rdp")


def _gdp_analysis() -> ModuleType:
    return _opacus_module("analysis.gdp")


def _opacus_accountant(module: str, name: str) -> Any:
    """A fresh opacus accountant, e.g. ``_opacus_accountant("prv", "PRVAccountant")``."""
    return getattr(_opacus_module(module), name)()


# --------------------------------------------------------------------------- validation


def check_accountant(name: object) -> str:
    """Return ``name`` if it is one of :data:`ACCOUNTANTS`.

    Raises:
        PrivacyError: otherwise, listing the allowed names.
    """
    if not isinstance(name, str) or name not in _EPSILON_OF:
        raise PrivacyError(f"accountant must be one of {ACCOUNTANTS}, got {name!r}")
    return name


def _normalise_history(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Validate entries, drop ``steps == 0``, and merge entries with equal (z, q).

    Composition is commutative, so merging equal mechanisms is exact; it lets PLD
    and PRV self-compose once (FFT power) instead of convolving one PLD per round.
    """
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise PrivacyError(
            f"history must be a sequence of (noise_multiplier, sample_rate, steps), "
            f"got {type(history).__name__}"
        )
    merged: dict[tuple[float, float], int] = {}
    for i, entry in enumerate(history):
        if not isinstance(entry, Sequence) or isinstance(entry, str | bytes) or len(entry) != 3:
            raise PrivacyError(
                f"history[{i}] must be (noise_multiplier, sample_rate, steps), got {entry!r}"
            )
        z = check_noise_multiplier(entry[0], name=f"history[{i}] noise_multiplier")
        q = check_sample_rate(entry[1], name=f"history[{i}] sample_rate")
        steps = check_steps(entry[2], name=f"history[{i}] steps")
        if steps:
            merged[(z, q)] = merged.get((z, q), 0) + steps
    return [(z, q, steps) for (z, q), steps in merged.items()]


# --------------------------------------------------------------------------- RDP fast path


@lru_cache(maxsize=_CACHE_SIZE)
def _rdp_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    # The expensive part (~10-100 ms, fractional orders); one per distinct (z, q), so
    # clients whose step count changes between rounds still hit the cache.
    vec = np.asarray(
        _rdp_analysis().compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDP_ORDERS
        ),
        dtype=np.float64,
    )
    vec.flags.writeable = False
    return vec


@lru_cache(maxsize=_CACHE_SIZE)
def _rdp_vector(noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    if steps == 0:
        # Not inf * 0 = nan when noise_multiplier == 0: no step spends nothing.
        vec = np.zeros_like(_ORDERS)
    else:
        # Same arithmetic as opacus' compute_rdp(steps=steps): per-step vector * steps.
        vec = _rdp_one_step(noise_multiplier, sample_rate) * steps
    vec.flags.writeable = False
    return vec


def rdp_vector(*, noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    """RDP of ``steps`` Poisson-subsampled Gaussian steps at each of :data:`RDP_ORDERS`.

    Composition of mechanisms is the sum of their vectors. Results are cached by
    ``(noise_multiplier, sample_rate, steps)`` and returned read-only (copy before
    modifying in place).

    Args:
        noise_multiplier: Noise standard deviation / clipping norm, >= 0.
        sample_rate: Poisson sampling probability of one example, in (0, 1].
        steps: Number of steps, >= 0.

    Returns:
        A read-only float64 array of shape ``(len(RDP_ORDERS),)``; ``inf`` entries
        when ``noise_multiplier == 0`` and ``steps > 0``.

    Raises:
        PrivacyError: an argument out of range.
    """
    z = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    n = check_steps(steps)
    return _rdp_vector(z, q, n)


def epsilon_from_rdp(
    rdp: np.ndarray | Sequence[float],
    *,
    delta: float,
    orders: Sequence[float] = RDP_ORDERS,
) -> float:
    """Convert an RDP curve to epsilon at ``delta`` (Opacus' ``get_privacy_spent``).

    The conversion is Balle et al. 2020, Theorem 21 (the "improved" one Opacus and
    dp-accounting use), minimised over ``orders``; clipped at 0.

    Args:
        rdp: RDP values, one per order (e.g. a sum of :func:`rdp_vector` results).
        delta: Target delta in (0, 1).
        orders: RDP orders of ``rdp``; :data:`RDP_ORDERS` unless you built your own.

    Returns:
        Epsilon (``math.inf`` if every order is infinite).

    Raises:
        PrivacyError: bad delta or orders, a length mismatch, or negative / NaN RDP values.

    Note:
        Uses ``warnings.catch_warnings`` (not thread-safe in Python < 3.14) to silence
        Opacus' "optimal order is the largest alpha" hint; call it from one thread.
    """
    d = check_delta(delta)
    orders_arr = _ORDERS if orders is RDP_ORDERS else np.asarray(orders, dtype=np.float64)
    if orders_arr.ndim != 1 or not (orders_arr > 1).all():
        raise PrivacyError("orders must be a 1-D sequence of RDP orders > 1")
    rdp_arr = np.asarray(rdp, dtype=np.float64)
    if rdp_arr.shape != orders_arr.shape:
        raise PrivacyError(f"rdp has shape {rdp_arr.shape} but there are {orders_arr.size} orders")
    if np.isnan(rdp_arr).any() or (rdp_arr < 0).any():
        raise PrivacyError("rdp values must be >= 0 (no NaN)")
    if not rdp_arr.any():
        # Nothing ran (e.g. only zero-step events): (0, 0)-DP. The conversion below would
        # report its floor (~0.1 at delta=1e-5) instead.
        return 0.0
    with warnings.catch_warnings():
        # Opacus warns when the best order is the first or last one; with fixed orders
        # the caller cannot act on it, and the ledger would warn on every record.
        warnings.filterwarnings("ignore", message="Optimal order is the")
        eps, _ = _rdp_analysis().get_privacy_spent(orders=orders_arr, rdp=rdp_arr, delta=d)
    eps = float(eps)
    # The conversion can dip below 0 for tiny RDP and large delta; (0, delta)-DP holds then.
    return max(0.0, eps)


# --------------------------------------------------------------------------- accountants


def _epsilon_rdp(history: list[HistoryEntry], delta: float) -> float:
    total = np.zeros_like(_ORDERS)
    for z, q, steps in history:
        total = total + _rdp_vector(z, q, steps)
    return epsilon_from_rdp(total, delta=delta)


def _epsilon_prv(history: list[HistoryEntry], delta: float) -> float:
    accountant = _opacus_accountant("prv", "PRVAccountant")
    accountant.history = list(history)
    with np.errstate(divide="ignore"):
        # At sample_rate == 1, opacus takes log(1 - q) = -inf on purpose; it is harmless.
        return float(accountant.get_epsilon(delta=delta))


def _epsilon_gdp(history: list[HistoryEntry], delta: float) -> float:
    if len(history) > 1:
        pairs = ", ".join(f"(noise_multiplier={z}, sample_rate={q})" for z, q, _ in history)
        raise PrivacyError(
            "accountant 'gdp' (opacus GaussianAccountant) needs one constant noise_multiplier "
            f"and sample_rate, but the history has {len(history)} different ones: {pairs}; "
            "use 'rdp', 'prv' or 'pld' for heterogeneous histories"
        )
    (z, q, steps) = history[0]
    with np.errstate(over="ignore"):
        # exp(1/z^2) overflows to inf for tiny z; mu = inf then means no privacy.
        mu = _gdp_analysis().compute_mu_poisson(steps=steps, noise_multiplier=z, sample_rate=q)
    # opacus solves delta(eps) = delta with brentq on [0, 500], which raises when the root
    # is outside the bracket: answer those two ends here instead.
    if mu == 0.0:  # noise so large that exp(1/z^2) - 1 rounds to 0
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        if _gdp_analysis().delta_eps_mu(eps=0.0, mu=mu) <= delta:
            return 0.0
        if not _gdp_analysis().delta_eps_mu(eps=_GDP_MAX_EPSILON, mu=mu) < delta:
            return math.inf
    with warnings.catch_warnings():
        # The "GDP is experimental and can underestimate" warning is stated in the
        # module docstring and DESIGN.md; repeating it on every call is noise.
        warnings.filterwarnings("ignore", message="GDP accounting is experimental")
        accountant = _opacus_accountant("gdp", "GaussianAccountant")
    accountant.history = [(z, q, steps)]
    return float(accountant.get_epsilon(delta=delta, poisson=True))


def _epsilon_pld(history: list[HistoryEntry], delta: float) -> float:
    try:
        import dp_accounting
    except ImportError as err:  # optional extra
        raise ImportError(
            "accountant 'pld' needs Google's dp-accounting: pip install 'fedsim[audit]'"
        ) from err
    accountant = dp_accounting.pld.PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    for z, q, steps in history:
        # GaussianDpEvent takes noise / sensitivity; under add/remove the sensitivity
        # is the clipping norm, so this is opacus' noise_multiplier as is.
        step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        accountant.compose(dp_accounting.SelfComposedDpEvent(step, steps))
    return float(accountant.get_epsilon(delta))


# Name registry: history (validated, merged, non-empty, every z > 0) -> epsilon.
_EPSILON_OF: dict[str, Callable[[list[HistoryEntry], float], float]] = {
    "rdp": _epsilon_rdp,
    "prv": _epsilon_prv,
    "gdp": _epsilon_gdp,
    "pld": _epsilon_pld,
}

#: Names accepted by ``accountant=``.
ACCOUNTANTS: tuple[str, ...] = tuple(_EPSILON_OF)


# --------------------------------------------------------------------------- public API


def epsilon_of_history(
    history: Sequence[HistoryEntry], *, delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon of the composition of Poisson-subsampled Gaussian mechanisms.

    Args:
        history: ``(noise_multiplier, sample_rate, steps)`` entries, the format of
            ``opacus.accountants.IAccountant.history``. Order does not matter.
        delta: Target delta in (0, 1).
        accountant: One of :data:`ACCOUNTANTS`.

    Returns:
        Epsilon (add/remove adjacency): 0.0 if no step was taken; ``math.inf`` if any
        step ran with ``noise_multiplier == 0``.

    Raises:
        PrivacyError: a bad entry, delta or accountant name; or ``"gdp"`` with entries
            of different (noise_multiplier, sample_rate).
        ImportError: ``"pld"`` without dp-accounting installed.
    """
    d = check_delta(delta)
    compute = _EPSILON_OF[check_accountant(accountant)]
    entries = _normalise_history(history)
    if not entries:
        return 0.0
    if any(z == 0.0 for z, _, _ in entries):
        return math.inf
    return compute(entries, d)


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """Epsilon of ``steps`` steps of DP-SGD with Poisson sampling (add/remove adjacency).

    Args:
        noise_multiplier: Noise standard deviation / clipping norm, >= 0.
        sample_rate: Poisson sampling probability of one example, in (0, 1]
            (batch size / shard size of that client).
        steps: Number of optimiser steps, >= 0.
        delta: Target delta in (0, 1).
        accountant: One of :data:`ACCOUNTANTS`.

    Returns:
        Epsilon; 0.0 when ``steps == 0``; ``math.inf`` when ``noise_multiplier == 0``.

    Raises:
        PrivacyError: an argument out of range or an unknown accountant.
        ImportError: ``"pld"`` without dp-accounting installed.

    Example:
        >>> round(epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5), 4)
        7.3291
    """
    entry = (
        check_noise_multiplier(noise_multiplier),
        check_sample_rate(sample_rate),
        check_steps(steps),
    )
    return epsilon_of_history([entry], delta=delta, accountant=accountant)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier (to tolerance) whose epsilon does not exceed the target.

    Bisection on the noise multiplier that only ever returns a value whose epsilon was
    computed and found ``<= target_epsilon``, so it never overshoots (unlike a search
    that returns a midpoint). It stops when ``target_epsilon - epsilon <=
    epsilon_tolerance`` or the bracket can no longer shrink (numerically flat epsilon).

    Args:
        target_epsilon: Finite epsilon budget, > 0.
        delta: Target delta in (0, 1).
        sample_rate: Poisson sampling probability, in (0, 1].
        steps: Number of steps, >= 0 (0 needs no noise: returns 0.0).
        accountant: One of :data:`ACCOUNTANTS`.
        epsilon_tolerance: How far below the target the result's epsilon may be, > 0.

    Returns:
        A noise multiplier ``z`` with ``epsilon(z) <= target_epsilon``.

    Raises:
        PrivacyError: an argument out of range, or a target no noise multiplier up to
            :data:`MAX_NOISE_MULTIPLIER` reaches (e.g. below the RDP conversion's floor).
    """
    target = check_positive(target_epsilon, name="target_epsilon")
    tolerance = check_positive(epsilon_tolerance, name="epsilon_tolerance")
    q = check_sample_rate(sample_rate)
    n = check_steps(steps)
    d = check_delta(delta)
    check_accountant(accountant)
    if n == 0:
        return 0.0

    def eps_at(z: float) -> float:
        return epsilon(noise_multiplier=z, sample_rate=q, steps=n, delta=d, accountant=accountant)

    # Invariant: eps_at(low) > target (low = 0 gives inf), eps_at(high) <= target.
    low, high = 0.0, 1.0
    eps_high = eps_at(high)
    while eps_high > target:
        low, high = high, 2.0 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise PrivacyError(
                f"target_epsilon={target} is unreachable with accountant "
                f"{accountant!r} at delta={d}, sample_rate={q}, steps={n}: even "
                f"noise_multiplier={low:g} gives epsilon={eps_high:.4g}; raise target_epsilon "
                "or delta (RDP's conversion has a floor; 'prv' or 'pld' go lower)"
            )
        eps_high = eps_at(high)
    return _bisect_noise(eps_at, low, high, eps_high, target=target, tolerance=tolerance)


def _bisect_noise(
    eps_at: Callable[[float], float],
    low: float,
    high: float,
    eps_high: float,
    *,
    target: float,
    tolerance: float,
) -> float:
    """Shrink [low, high] (eps_at(low) > target >= eps_high = eps_at(high)) until the
    epsilon of `high` is within `tolerance` below the target; returns `high`."""
    while target - eps_high > tolerance:
        mid = 0.5 * (low + high)
        if not low < mid < high:  # bracket exhausted at float precision
            break
        eps_mid = eps_at(mid)
        if eps_mid <= target:
            high, eps_high = mid, eps_mid
        else:
            low = mid
    return high
