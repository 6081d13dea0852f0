"""Property tests (hypothesis) of the RDP accountant and the noise search."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.privacy import epsilon, noise_multiplier_for

# Sample rates from a fixed list: each distinct (noise, q) costs one RDP curve (~10 ms),
# and the cache then makes repeated ones free, keeping the suite fast.
SAMPLE_RATES = st.sampled_from([1e-3, 4e-3, 1e-2, 2e-2, 5e-2])
NOISES = st.sampled_from([0.6, 0.8, 1.0, 1.3, 2.0, 4.0])
DELTAS = st.sampled_from([1e-4, 1e-5, 1e-6])
# Tiny slack for floating-point summation; monotonicity itself is exact maths.
SLACK = 1e-12

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(z=NOISES, q=SAMPLE_RATES, steps=st.integers(1, 5000), extra=st.integers(1, 5000), d=DELTAS)
def test_epsilon_grows_with_steps(z: float, q: float, steps: int, extra: int, d: float) -> None:
    fewer = epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=d)
    more = epsilon(noise_multiplier=z, sample_rate=q, steps=steps + extra, delta=d)
    assert more >= fewer * (1 - SLACK)


@FAST
@given(
    z=NOISES,
    q_pair=st.lists(SAMPLE_RATES, min_size=2, max_size=2, unique=True),
    steps=st.integers(1, 3000),
    d=DELTAS,
)
def test_epsilon_grows_with_sample_rate(
    z: float, q_pair: list[float], steps: int, d: float
) -> None:
    low, high = sorted(q_pair)
    eps_low = epsilon(noise_multiplier=z, sample_rate=low, steps=steps, delta=d)
    eps_high = epsilon(noise_multiplier=z, sample_rate=high, steps=steps, delta=d)
    assert eps_high >= eps_low * (1 - SLACK)


@FAST
@given(
    z_pair=st.lists(NOISES, min_size=2, max_size=2, unique=True),
    q=SAMPLE_RATES,
    steps=st.integers(1, 3000),
    d=DELTAS,
)
def test_epsilon_falls_with_noise(z_pair: list[float], q: float, steps: int, d: float) -> None:
    low, high = sorted(z_pair)
    eps_low_noise = epsilon(noise_multiplier=low, sample_rate=q, steps=steps, delta=d)
    eps_high_noise = epsilon(noise_multiplier=high, sample_rate=q, steps=steps, delta=d)
    assert eps_high_noise <= eps_low_noise * (1 + SLACK)


@settings(max_examples=12, deadline=None)
@given(
    target=st.floats(0.5, 12.0),
    q=st.sampled_from([1e-3, 1e-2, 4e-2]),
    steps=st.integers(1, 4000),
    d=DELTAS,
    tolerance=st.sampled_from([0.01, 0.05]),
)
def test_noise_multiplier_never_overshoots(
    target: float, q: float, steps: int, d: float, tolerance: float
) -> None:
    z = noise_multiplier_for(
        target_epsilon=target, delta=d, sample_rate=q, steps=steps, epsilon_tolerance=tolerance
    )
    eps = epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=d)
    assert eps <= target
    assert target - eps <= tolerance
