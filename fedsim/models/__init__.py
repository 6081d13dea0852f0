"""Model zoo: small PyTorch models that Opacus can train privately, by registry name.

Usage::

    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[16, 32])
    check_private(model)  # raises ModelError if Opacus cannot compute per-sample gradients

Each builder lives in its own file and has the signature
``build(input_shape, num_classes, *, option=default, ...)``; its keyword parameters are the
options ``build_model`` accepts for that name, so the registry needs no per-model branching.
The names are entries of `fedsim.registry.MODELS`, beside the user's own models
(``@fedsim.register_model`` or an import path ``"package.module:build"``).

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

from collections.abc import Callable
from typing import Any

from opacus.validators import ModuleValidator
from torch import nn

from fedsim import registry
from fedsim.models._checks import ModelError

__all__ = ["build_model", "check_options", "MODELS", "ModelError", "check_private"]

ModelBuilder = Callable[..., nn.Module]

#: name -> builder ``build(input_shape, num_classes, **options) -> nn.Module``: a read-only
#: view of `fedsim.registry.MODELS` (built-ins and `@fedsim.register_model` entries).
MODELS: registry.RegistryView = registry.MODELS.view()


def check_options(name: str, options: dict[str, Any]) -> ModelBuilder:
    """The builder of model ``name``, once its options are known to be ones it takes.

    Raises:
        ModelError: unknown ``name`` or one that cannot be imported, or an option the
            builder does not take (the message lists those it takes, with defaults).
    """
    try:
        builder = registry.MODELS.load(name)
        allowed, open_options = registry.MODELS.options(name)
    except registry.RegistryError as exc:
        raise ModelError(str(exc)) from None
    unknown = sorted(set(options) - set(allowed))
    if unknown and not open_options:
        takes = (
            ", ".join(
                f"{k} (default {v!r})" if v is not registry.REQUIRED else f"{k} (required)"
                for k, v in allowed.items()
            )
            if allowed
            else "no options"
        )
        raise ModelError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes {takes}"
        )
    return builder


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build the model ``name`` for inputs of ``input_shape`` (no batch dimension).

    ``name`` is a registered model (built-in or `@fedsim.register_model`) or an import
    path ``"package.module:build"``, called as ``build(input_shape=..., num_classes=...,
    **options)``. Construction only draws from torch's global RNG, so it is
    deterministic after ``torch.manual_seed``. The model is returned in training mode,
    as Opacus requires.

    Raises:
        ModelError: unknown ``name`` or one that cannot be imported, an option the model
            does not take, a bad value for ``input_shape``, ``num_classes`` or an option,
            or a builder that returns something other than an ``nn.Module``; the message
            lists what is allowed.
    """
    builder = check_options(name, options)
    model = builder(input_shape=input_shape, num_classes=num_classes, **options)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    model.train()  # Opacus needs training mode; a user builder may have left eval on
    return model


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
