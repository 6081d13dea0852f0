"""Every registered model trains under Opacus in every grad_sample mode it claims.

Per-sample gradients are compared with a reference computed one example at a time, so a mode
that silently returns wrong values (not just one that raises) fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.utils import get_gsm_class
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.models import build_model

# Known, harmless Opacus noise: torch's full-backward-hook warning on a first layer whose input
# needs no grad, the insecure-RNG reminder, and functorch's CPU autocast notice.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning"),
    pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning"),
]

BATCH = 4


def per_example_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[list[torch.Tensor]]:
    """Gradients of each example's own loss, one backward per example: the ground truth."""
    grads = []
    for i in range(len(x)):
        m = copy.deepcopy(model)
        nn.functional.cross_entropy(m(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append([p.grad.detach().clone() for p in m.parameters()])
    return grads


def batch(case: Any) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(case.name, **case.kwargs())
    x = case.make_x(BATCH)
    y = torch.randint(0, case.num_classes, (BATCH,))
    return model, x, y


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients_match_reference(case: Any, mode: str) -> None:
    model, x, y = batch(case)
    reference = per_example_grads(model, x, y)
    kwargs = {"force_functorch": True} if mode == "functorch" else {}
    gsm = get_gsm_class(mode)(model, batch_first=True, loss_reduction="mean", **kwargs)
    nn.functional.cross_entropy(gsm(x), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params
    for j, p in enumerate(params):
        assert p.grad_sample is not None, f"{mode}: no grad_sample for a {tuple(p.shape)} param"
        assert p.grad_sample.shape == (BATCH, *p.shape)
        # "mean" reduction: Opacus rescales so grad_sample[i] is example i's own gradient.
        expected = torch.stack([reference[i][j] for i in range(BATCH)])
        torch.testing.assert_close(p.grad_sample, expected, rtol=1e-4, atol=1e-5)


def test_ghost_clipping_norms_match_reference(case: Any) -> None:
    model, x, y = batch(case)
    reference = per_example_grads(model, x, y)
    expected = torch.stack([torch.cat([g.flatten() for g in gs]).norm() for gs in reference])
    gsm = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="mean")
    nn.functional.cross_entropy(gsm(x), y).backward()
    for p in model.parameters():
        assert p._norm_sample.shape == (BATCH,)
    torch.testing.assert_close(gsm.get_norm_sample(), expected, rtol=1e-3, atol=1e-5)


def _one_private_step(case: Any, mode: str) -> None:
    """make_private on a tiny loader, one optimizer step; every parameter must move.

    A smoke test of the whole DP pipeline (wrapping, clipping, noise); correctness of the
    per-sample quantities is checked against the reference above.
    """
    torch.manual_seed(0)
    model = build_model(case.name, **case.kwargs())
    data = TensorDataset(case.make_x(8), torch.randint(0, case.num_classes, (8,)))
    loader = DataLoader(data, batch_size=BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    private = PrivacyEngine().make_private(
        module=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,  # a Poisson batch may be empty; this test is about the model
        grad_sample_mode=mode,
    )
    if mode == "ghost":
        module, optimizer, criterion, loader = private
    else:
        module, optimizer, loader = private
        criterion = nn.CrossEntropyLoss()
    x, y = next(iter(loader))
    optimizer.zero_grad()
    criterion(module(x), y).backward()  # the ghost criterion runs both of its backward passes
    optimizer.step()
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_privacy_engine_step(case: Any, mode: str) -> None:
    _one_private_step(case, mode)
