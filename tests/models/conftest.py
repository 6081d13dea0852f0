"""Shared cases for the model tests: one small, realistic configuration per registered model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch


@dataclass(frozen=True)
class ModelCase:
    """A model name with build arguments and a maker for a matching input batch."""

    id: str
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    make_x: Callable[[int], torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model`` (besides the name)."""
        return {"input_shape": self.input_shape, "num_classes": self.num_classes, **self.options}


CASES: list[ModelCase] = [
    ModelCase("cnn-digits8x8", "cnn", (1, 8, 8), 10, lambda n: torch.randn(n, 1, 8, 8)),
    ModelCase("cnn-28x28", "cnn", (1, 28, 28), 10, lambda n: torch.randn(n, 1, 28, 28)),
    ModelCase(
        "cnn-rgb-nohidden",
        "cnn",
        (3, 16, 12),
        5,
        lambda n: torch.randn(n, 3, 16, 12),
        {"channels": [4, 8, 8], "hidden": 0},
    ),
    ModelCase("femnist_cnn", "femnist_cnn", (1, 28, 28), 62, lambda n: torch.randn(n, 1, 28, 28)),
    ModelCase("cnn1d-mnist1d", "cnn1d", (1, 40), 10, lambda n: torch.randn(n, 1, 40)),
    # A short sequence and small LSTM keep the per-sample reference loop fast; the default
    # LEAF size is covered by the shape and parameter-count tests.
    ModelCase(
        "char_lstm",
        "char_lstm",
        (12,),
        80,
        lambda n: torch.randint(0, 80, (n, 12)),
        {"hidden": 32},
    ),
    ModelCase("logreg", "logreg", (60,), 10, lambda n: torch.randn(n, 60)),
    ModelCase("mlp", "mlp", (60,), 10, lambda n: torch.randn(n, 60), {"hidden": 16}),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> ModelCase:
    """Each registered model in a small configuration."""
    return request.param


@pytest.fixture
def all_cases() -> list[ModelCase]:
    """Every case at once, for tests about the registry as a whole."""
    return CASES
