"""Implementation checks of DP-SGD as fedsim runs it (Opacus' GradSampleModule + DPOptimizer).

The accountants assume two things of every step: each example's gradient enters
the sum with norm at most C (clipping), and Gaussian noise of standard deviation
z * C is added to the sum. These functions measure both on a real model, through
the same Opacus code path the trainer uses, so a test can check them against
``max_grad_norm`` and ``noise_multiplier * max_grad_norm``.

The model passed in is never modified: the checks work on a deep copy.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters to check")
    return params


def _flat_norm(tensors: list[torch.Tensor]) -> float:
    # float64: the check compares against C * (1 + 1e-5), so float32 rounding of the
    # norm itself must not decide it.
    return float(torch.cat([t.detach().reshape(-1).double() for t in tensors]).norm())


def clipped_norms_ok(
    model: nn.Module,
    batch_x: torch.Tensor,
    batch_y: torch.Tensor,
    max_grad_norm: float,
    *,
    loss_fn: nn.Module | None = None,
) -> float:
    """Largest per-example gradient norm after Opacus' clipping, in one real DP-SGD step.

    Wraps a copy of ``model`` in ``GradSampleModule`` and ``DPOptimizer`` (noise 0,
    sum reduction), computes per-example gradients of the batch and takes one
    optimizer step. Then each example's per-sample gradient is passed alone through
    the same optimizer's clipping (``pre_step``): with noise 0 and sum reduction,
    ``p.grad`` is then exactly that example's clipped gradient, as Opacus computed
    it. The per-example clipped gradients must add up to the batch step's gradient
    (checked), so what is measured is what the step used.

    Args:
        model: The model (not modified).
        batch_x: Inputs, batch first (at least one example).
        batch_y: Integer labels of the same length.
        max_grad_norm: Clipping norm C, > 0.
        loss_fn: Per-batch loss with ``reduction="sum"``; default cross-entropy.

    Returns:
        max_i ||clip(g_i)||: should be <= ``max_grad_norm`` (Opacus divides by
        ``norm + 1e-6``, so it is a hair below C for clipped examples).

    Raises:
        ValueError: bad arguments.
        RuntimeError: the per-example replay does not add up to the batch step
            (then the measurement would not describe the step).
    """
    c = _check_positive(max_grad_norm, "max_grad_norm")
    if batch_x.shape[0] == 0 or batch_x.shape[0] != batch_y.shape[0]:
        raise ValueError(
            f"batch_x and batch_y must hold the same number (>= 1) of examples, got "
            f"{batch_x.shape[0]} and {batch_y.shape[0]}"
        )
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss(reduction="sum")
    opt, params, per_sample, batch_sum = _batch_step(model, batch_x, batch_y, c, loss_fn)
    largest = _replay_clipping(opt, params, per_sample, batch_sum, int(batch_x.shape[0]), c)
    opt.zero_grad(set_to_none=True)
    return largest


def _batch_step(
    model: nn.Module, batch_x: torch.Tensor, batch_y: torch.Tensor, c: float, loss_fn: nn.Module
) -> tuple[DPOptimizer, list[nn.Parameter], list[torch.Tensor], list[torch.Tensor]]:
    """One DP-SGD step (noise 0, lr 0) of a copy of `model` on the batch: the optimizer,
    its parameters, their per-example gradients and the step's summed gradient."""
    work = copy.deepcopy(model)
    work.train()
    gsm = GradSampleModule(work, batch_first=True, loss_reduction="sum")
    params = _trainable(work)
    # lr 0: the step must run the full DP pipeline, but the weights need not move.
    opt = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=c,
        expected_batch_size=int(batch_x.shape[0]),
        loss_reduction="sum",
    )
    opt.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # Inputs never require grad here; torch's note about full backward hooks on
        # module outputs is expected with Opacus' hooks and says nothing about clipping.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss_fn(gsm(batch_x), batch_y).backward()
    per_sample = [p.grad_sample.detach().clone() for p in params]  # type: ignore[union-attr]
    opt.step()
    batch_sum = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
    return opt, params, per_sample, batch_sum


def _replay_clipping(
    opt: DPOptimizer,
    params: list[nn.Parameter],
    per_sample: list[torch.Tensor],
    batch_sum: list[torch.Tensor],
    n: int,
    c: float,
) -> float:
    """Pass each of the `n` examples alone through the optimizer's clipping; returns the
    largest clipped norm, after checking the clipped gradients add up to `batch_sum`."""
    largest = 0.0
    replay = [torch.zeros_like(g) for g in batch_sum]
    for i in range(n):
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, per_sample, strict=True):
            p.grad_sample = g[i : i + 1].clone()
        opt.pre_step()  # clip + (zero) noise: p.grad is example i's clipped gradient
        clipped = [p.grad.detach() for p in params]  # type: ignore[union-attr]
        largest = max(largest, _flat_norm(clipped))
        for acc, g in zip(replay, clipped, strict=True):
            acc += g
    for name_i, (got, want) in enumerate(zip(replay, batch_sum, strict=True)):
        # Summation order differs (one einsum vs a loop): float32 rounding only.
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * c):
            raise RuntimeError(
                f"per-example replay of the clipping does not add up to the batch step "
                f"(parameter #{name_i}, max abs diff {float((got - want).abs().max()):.3g})"
            )
    return largest


def measured_noise_std(
    model: nn.Module,
    noise_multiplier: float,
    max_grad_norm: float,
    *,
    secure_mode: bool = False,
    steps: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    """Standard deviation of the noise DPOptimizer adds to an all-zero gradient.

    Each step is an empty Poisson batch, as fedsim's trainer runs it: every
    parameter gets ``grad_sample`` of shape ``(0, *p.shape)``, the optimizer clips
    (nothing), adds noise and does not rescale (``loss_reduction="sum"``,
    ``expected_batch_size=1``). ``p.grad`` is then pure noise; its sample standard
    deviation over all parameters (and steps) is returned.

    Args:
        model: The model whose parameters receive the noise (not modified).
        noise_multiplier: z, >= 0.
        max_grad_norm: C, > 0.
        secure_mode: Opacus' floating-point-attack mitigation (4 draws per value).
        steps: Optimizer steps to pool, >= 1 (more steps, tighter estimate).
        generator: Noise generator (seed it for a reproducible test); default torch's.

    Returns:
        The measured std; the accountant assumes ``noise_multiplier * max_grad_norm``.

    Raises:
        ValueError: bad arguments.
    """
    c = _check_positive(max_grad_norm, "max_grad_norm")
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, int | float):
        raise ValueError(f"noise_multiplier must be a number, got {noise_multiplier!r}")
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    work = copy.deepcopy(model)
    params = _trainable(work)
    opt = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=c,
        expected_batch_size=1,
        loss_reduction="sum",
        generator=generator,
        secure_mode=secure_mode,
    )
    draws = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        opt.step()
        draws.extend(p.grad.detach().reshape(-1).double() for p in params)  # type: ignore[union-attr]
    values = torch.cat(draws)
    if values.numel() < 2:
        raise ValueError("need at least 2 noise values to estimate a standard deviation")
    return float(values.std())
