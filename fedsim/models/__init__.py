"""Model zoo: a name registry of small PyTorch models that Opacus can train privately.

Usage::

    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[16, 32])
    check_private(model)  # raises ModelError if Opacus cannot compute per-sample gradients

Each builder lives in its own file and has the signature
``build(input_shape, num_classes, *, option=default, ...)``; its keyword-only parameters are the
options ``build_model`` accepts for that name, so the registry needs no per-model branching.

=============  =====================  ======================================================
name           input                  options (defaults)
=============  =====================  ======================================================
cnn            float (C, H, W)        channels=[16, 32], hidden=64
cnn1d          float (C, L)           channels=[16, 32], hidden=64 (e.g. MNIST-1D)
femnist_cnn    float (C, H, W)        none (LEAF preset, ~6.6M params for 62 classes)
char_lstm      int64 (seq_len,)       embed_dim=8, hidden=256, layers=2
logreg         float, any shape       none
mlp            float, any shape       hidden=64
=============  =====================  ======================================================

Opacus grad_sample modes: "hooks", "functorch", "ew" and "ghost" all work for every model here;
tests/models checks each against per-example gradients computed one sample at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from opacus.validators import ModuleValidator
from torch import nn

from fedsim.models import char_lstm, cnn, cnn1d, femnist_cnn, logreg, mlp
from fedsim.models._checks import ModelError

__all__ = ["build_model", "MODELS", "ModelError", "check_private"]

ModelBuilder = Callable[..., nn.Module]

#: name -> builder ``build(input_shape, num_classes, **options) -> nn.Module``.
MODELS: dict[str, ModelBuilder] = {
    cnn.NAME: cnn.build,
    cnn1d.NAME: cnn1d.build,
    femnist_cnn.NAME: femnist_cnn.build,
    char_lstm.NAME: char_lstm.build,
    logreg.NAME: logreg.build,
    mlp.NAME: mlp.build,
}


def _options_of(builder: ModelBuilder) -> dict[str, Any]:
    """Keyword-only parameters of ``builder`` with their defaults: the options it accepts."""
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build the registered model ``name`` for inputs of ``input_shape`` (no batch dimension).

    Construction only draws from torch's global RNG, so it is deterministic after
    ``torch.manual_seed``. The model is returned in training mode, as Opacus requires.

    Raises:
        ModelError: unknown ``name``, an option the model does not take, or a bad value for
            ``input_shape``, ``num_classes`` or an option; the message lists what is allowed.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    builder = MODELS[name]
    allowed = _options_of(builder)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = (
            ", ".join(f"{k} (default {v!r})" for k, v in allowed.items())
            if allowed
            else "no options"
        )
        raise ModelError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes {takes}"
        )
    return builder(input_shape, num_classes, **options)


def check_private(model: nn.Module) -> None:
    """Raise ModelError unless Opacus can train ``model`` with per-sample gradients.

    Runs Opacus' ``ModuleValidator`` (non-strict, to collect every problem at once) and joins
    its messages, e.g. that BatchNorm must become GroupNorm or that the model must be in
    training mode. ``opacus.validators.ModuleValidator.fix`` can repair many of them.
    """
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        details = "; ".join(str(e) for e in errors)
        raise ModelError(
            f"{type(model).__name__} cannot be trained with Opacus: {details} "
            f"(opacus.validators.ModuleValidator.fix(model) can replace many such layers)"
        )
