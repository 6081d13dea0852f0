"""DP-SGD as Opacus runs it: per-example clipping and the noise scale (issue item 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from fedsim.audit.checks import clipped_norms_ok, measured_noise_std
from fedsim.data import load_dataset
from fedsim.models import build_model


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture(scope="module")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    bundle = load_dataset("digits", seed=0)
    return bundle.train.batch(np.arange(32))


@pytest.fixture(scope="module")
def raw_norms(cnn: nn.Module, digits_batch: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    return _per_example_norms(cnn, *digits_batch)


def _per_example_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Unclipped per-example gradient norms, one backward pass per example (no Opacus)."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    norms = []
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad.reshape(-1).double() for p in model.parameters()]
        norms.append(float(torch.cat(grads).norm()))
    model.zero_grad(set_to_none=True)
    return norms


@pytest.mark.parametrize("max_grad_norm", [0.01, 0.1, 1.0])
def test_clipped_norms_are_at_most_the_clip_norm(
    cnn: nn.Module,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
    raw_norms: list[float],
    max_grad_norm: float,
) -> None:
    x, y = digits_batch
    largest = clipped_norms_ok(cnn, x, y, max_grad_norm)
    assert largest <= max_grad_norm * (1 + 1e-5)
    # Tight: these examples' gradients are all longer than C, so the largest clipped
    # one sits at C (Opacus divides by norm + 1e-6), not somewhere below it.
    assert min(raw_norms) > max_grad_norm
    assert largest >= max_grad_norm * (1 - 1e-4)


def test_unclipped_gradients_pass_through(
    cnn: nn.Module, digits_batch: tuple[torch.Tensor, torch.Tensor], raw_norms: list[float]
) -> None:
    # With a clip norm above every gradient the function reports the raw largest
    # per-example norm: it measures the gradients, it does not just echo C.
    x, y = digits_batch
    largest = clipped_norms_ok(cnn, x, y, 1e3)
    assert largest == pytest.approx(max(raw_norms), rel=1e-4)


def test_model_is_left_untouched(
    cnn: nn.Module, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    clipped_norms_ok(cnn, *digits_batch, 0.1)
    measured_noise_std(cnn, 1.0, 1.0)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert not hasattr(next(cnn.parameters()), "grad_sample")


def _chi2_band(n: int, alpha: float = 1e-6) -> tuple[float, float]:
    """Two-sided band of sample std / true std for n Gaussian draws (mean estimated)."""
    lo = stats.chi2.ppf(alpha / 2, n - 1) / (n - 1)
    hi = stats.chi2.ppf(1 - alpha / 2, n - 1) / (n - 1)
    return math.sqrt(lo), math.sqrt(hi)


@pytest.mark.parametrize("secure_mode", [False, True])
@pytest.mark.parametrize("noise_multiplier", [0.5, 1.0, 2.0])
def test_noise_std_is_noise_multiplier_times_clip_norm(
    cnn: nn.Module, noise_multiplier: float, secure_mode: bool
) -> None:
    max_grad_norm = 0.7
    gen = torch.Generator().manual_seed(1234)  # seeded: the test cannot flake
    std = measured_noise_std(
        cnn, noise_multiplier, max_grad_norm, secure_mode=secure_mode, generator=gen
    )
    expected = noise_multiplier * max_grad_norm
    n = sum(p.numel() for p in cnn.parameters())  # ~13.7k draws
    lo, hi = _chi2_band(n)
    assert lo * expected <= std <= hi * expected
    assert std == pytest.approx(expected, rel=0.05)


def test_noise_check_detects_a_wrong_scale(cnn: nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    std = measured_noise_std(cnn, 1.0, 1.0, generator=gen)
    lo, hi = _chi2_band(sum(p.numel() for p in cnn.parameters()))
    assert not lo * 0.9 <= std <= hi * 0.9  # 10 % too little noise is outside the band
    assert measured_noise_std(cnn, 0.0, 1.0) == 0.0


def test_bad_arguments(cnn: nn.Module, digits_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits_batch
    with pytest.raises(ValueError, match="max_grad_norm"):
        clipped_norms_ok(cnn, x, y, 0.0)
    with pytest.raises(ValueError, match="same number"):
        clipped_norms_ok(cnn, x, y[:3], 1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        measured_noise_std(cnn, -1.0, 1.0)
    with pytest.raises(ValueError, match="steps"):
        measured_noise_std(cnn, 1.0, 1.0, steps=0)
