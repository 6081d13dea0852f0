"""The scenario's model as both sides build it: the initial global model and its DP-SGD mode.

Server (central evaluation, the run summary) and workers (training) call the same
functions on the same scenario, so they start from the same weights and agree on how
per-example gradients are computed.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.config import Scenario
from fedsim.models import build_model
from fedsim.seeding import derive_seed


def build_global_model(scenario: Scenario, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The initial global model: same weights on every process for the same seed."""
    torch.manual_seed(derive_seed(scenario.seed, "init-model"))
    return build_model(
        scenario.model.name,
        input_shape=input_shape,
        num_classes=classes,
        **scenario.model.options(),
    )


def choose_grad_sample_mode(model: nn.Module, setting: str) -> str:
    """ "hooks" (per-example gradients) or "ghost" (ghost clipping) for DP-SGD.

    "auto" picks ghost clipping when layers with a ghost norm (Linear, Embedding)
    hold most of the parameters: there it skips materialising per-example gradients,
    the bulk of DP-SGD's cost. Both clip each example to the same norm and add the
    same noise (tests/clients/test_ghost.py compares their noiseless updates).
    """
    if setting != "auto":
        return setting
    from opacus.grad_sample import GradSampleModuleFastGradientClipping as Ghost

    total = ghost = 0
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        total += own
        if type(module) in Ghost.NORM_SAMPLERS:
            ghost += own
    return "ghost" if total and ghost / total >= 0.5 else "hooks"
