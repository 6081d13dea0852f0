"""One-hidden-layer perceptron ("mlp") on the flattened input.

``Linear(d, hidden) -> ReLU -> Linear(hidden, num_classes)``; with FedProx Synthetic's 60
features, 10 classes and the default ``hidden=64`` that is 60*64 + 64 + 64*10 + 10 = 4,554
parameters. A step up from ``logreg`` when a non-convex baseline is wanted.

Opacus grad_sample modes: "hooks", "functorch", "ew" and "ghost" all work.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.models._checks import check_input_shape, check_num_classes, flat_size, positive_int

NAME = "mlp"


class MLP(nn.Module):
    """Flatten, one ReLU hidden layer, then class logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs to class logits."""
        # x: (batch, *input_shape)
        x = self.flatten(x)  # (batch, in_features)
        x = self.relu(self.fc1(x))  # (batch, hidden)
        return self.fc2(x)  # (batch, num_classes)


def build(input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 64) -> MLP:
    """Build an :class:`MLP` after checking shape and options.

    Args:
        input_shape: shape of one example, e.g. (60,); flattened.
        num_classes: number of output logits.
        hidden: width of the hidden layer.
    """
    shape = check_input_shape(NAME, input_shape, ndim=None, hint="a tuple such as (60,)")
    return MLP(
        flat_size(shape),
        check_num_classes(NAME, num_classes),
        hidden=positive_int(NAME, "hidden", hidden),
    )
